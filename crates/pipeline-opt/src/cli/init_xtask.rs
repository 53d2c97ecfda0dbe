//! `init-xtask`: writes an `xtask` crate that runs this library's command line into a
//! user's workspace.

use anyhow::Result;

impl super::flags::InitXtask {
    pub(crate) fn run(self) -> Result<i32> {
        anyhow::bail!("init-xtask is not written yet")
    }
}
