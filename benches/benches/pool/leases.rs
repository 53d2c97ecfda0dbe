//! Lease latency of the service pool against real servers: 1000 leases each from a
//! PostgreSQL and a Redis pool of 4 (so refills are measured, not only the first warm
//! slots), and cold starts from the cached template, reported together as ratios.
//! Percentiles need every sample, so this group times by hand and prints its own table;
//! it runs under `cargo bench` (not in test mode) when no filter or a `pool` filter is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use pipeline_opt::config::{ServiceConfig, ServiceKind};
use pipeline_opt::pool::{self, ContainerPool, PoolOptions};

const LEASES: usize = 1000;
const POOL_SIZE: usize = 4;
const COLD_STARTS: usize = 7;
const PACED_LEASES: usize = 200;

fn should_run() -> bool {
    crate::bench_mode() && crate::selected("pool")
}

fn options() -> PoolOptions {
    PoolOptions {
        supervisor_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_pool-supervisor"))),
        owner: Some(std::process::id()),
        template_cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pool-template")),
        ..PoolOptions::default()
    }
}

fn service(kind: ServiceKind, size: usize) -> ServiceConfig {
    ServiceConfig { size, ..ServiceConfig::new(kind) }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub fn pool_leases(_c: &mut Criterion) {
    if !should_run() {
        return;
    }
    for program in ["initdb", "redis-server"] {
        if pool::find_program(program).is_none() {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{program} is missing; `cargo xtask ci` installs it"
            );
            eprintln!(
                "pool/leases NOT RUN: {program} is missing (install postgresql and redis-server)"
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pool = ContainerPool::at(&dir.path().join("pool"));

    // Cold starts: `up` of one PostgreSQL service from the cached template to its first
    // ready lease slot (the first start, which may run initdb, is not counted).
    let one_pg = BTreeMap::from([("pg".to_string(), service(ServiceKind::Postgres, 1))]);
    pool.up(dir.path(), &one_pg, &options()).unwrap();
    pool.down().unwrap();
    let mut cold_up = Vec::new();
    let mut cold_server = Vec::new();
    for _ in 0..COLD_STARTS {
        let start = Instant::now();
        let handle = pool.up(dir.path(), &one_pg, &options()).unwrap();
        cold_up.push(start.elapsed());
        cold_server.push(Duration::from_millis(handle.status.services["pg"].start_ms[0]));
        pool.down().unwrap();
    }
    cold_up.sort();
    cold_server.sort();

    let services = BTreeMap::from([
        ("postgres".to_string(), service(ServiceKind::Postgres, POOL_SIZE)),
        ("redis".to_string(), service(ServiceKind::Redis, POOL_SIZE)),
    ]);
    pool.up(dir.path(), &services, &options()).unwrap();
    let mut results = BTreeMap::new();
    // How long a test's use of a PostgreSQL lease took here: the demand the refill meets.
    let mut pg_use = Vec::with_capacity(LEASES);
    for name in ["postgres", "redis"] {
        let mut samples = Vec::with_capacity(LEASES);
        for _ in 0..LEASES {
            let start = Instant::now();
            let lease = pool.lease(name, Duration::from_secs(30)).unwrap();
            samples.push(start.elapsed());
            let used = Instant::now();
            // Use the lease as a test would: one connection, one round trip.
            if name == "postgres" {
                let mut c = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
                c.simple_query("SELECT 1").unwrap();
            } else {
                let mut c = redis::Client::open(lease.url()).unwrap().get_connection().unwrap();
                redis::cmd("PING").query::<String>(&mut c).unwrap();
            }
            if name == "postgres" {
                pg_use.push(used.elapsed());
            }
        }
        samples.sort();
        results.insert(name, samples);
    }
    // The same PostgreSQL pool when tests hold their databases a little while (50 ms
    // between leases): the refills keep up and every lease finds a ready database.
    let mut paced = Vec::with_capacity(PACED_LEASES);
    for _ in 0..PACED_LEASES {
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let lease = pool.lease("postgres", Duration::from_secs(30)).unwrap();
        paced.push(start.elapsed());
        drop(lease);
    }
    paced.sort();
    pg_use.sort();
    // The supervisor publishes its refill numbers twice a second.
    std::thread::sleep(Duration::from_millis(1500));
    let refill = pool.status().services.get("postgres").and_then(|s| s.refill);
    pool.down().unwrap();

    let cold = percentile(&cold_up, 0.5);
    println!(
        "\npool/leases: {LEASES} leases per service from a pool of {POOL_SIZE}, and {COLD_STARTS} cold starts"
    );
    println!("{:<32} {:>12} {:>12} {:>12} {:>14}", "", "p50", "p99", "max", "cold p50 / p50");
    for (name, s) in &results {
        let p50 = percentile(s, 0.5);
        println!(
            "{:<32} {:>12} {:>12} {:>12} {:>13.0}x",
            format!("lease {name}"),
            ms(p50),
            ms(percentile(s, 0.99)),
            ms(*s.last().unwrap()),
            cold.as_secs_f64() / p50.as_secs_f64()
        );
    }
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>13.0}x",
        format!("lease postgres, paced ({PACED_LEASES})"),
        ms(percentile(&paced, 0.5)),
        ms(percentile(&paced, 0.99)),
        ms(*paced.last().unwrap()),
        cold.as_secs_f64() / percentile(&paced, 0.5).as_secs_f64()
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "cold start: `up` to ready",
        ms(cold),
        "",
        ms(*cold_up.last().unwrap())
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "use: connect + SELECT 1",
        ms(percentile(&pg_use, 0.5)),
        ms(percentile(&pg_use, 0.99)),
        ms(*pg_use.last().unwrap())
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "cold start: server spawn",
        ms(percentile(&cold_server, 0.5)),
        "",
        ms(*cold_server.last().unwrap())
    );
    match refill {
        Some(r) => println!("postgres refill over the run: {r}"),
        None => println!("postgres refill over the run: not reported"),
    }
}
