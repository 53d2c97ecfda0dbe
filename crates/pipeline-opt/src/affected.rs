//! Changed files since a git ref, mapped to the packages whose builds and tests they can
//! affect. (Being built: issue 5.)
