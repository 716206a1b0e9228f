//! Download throughput: wua's fetcher (download, SHA-256, commit into the cache; with the fsyncs
//! and without them, as under `unsafe_io`) against `curl -o` (download only, no fsync) for one
//! large file over loopback, from the same server (`wua-test-server`, in a process of its own).
//!
//! ```sh
//! cargo run --release -p wua --example download-bench -- [SIZE_MIB] [RUNS]
//! ```
//!
//! Defaults: 1024 MiB, 3 runs each, interleaved. Prints every run, then the best of each: wall
//! time (throughput) and the client's CPU time (user + system), which other load on the machine
//! disturbs less than wall time does.

use std::fs;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use wua::download::{FetchTarget, Fetched, Fetcher, PayloadCache};
use wua::net::NetworkOptions;
use wua_test_server::TestServer;

/// CPU time (user + system) of this process, or of its waited-for children.
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of another process, from `/proc/PID/stat` (user + system clock ticks).
fn process_cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

#[derive(Clone, Copy)]
struct Best(Option<Sample>);

impl Best {
    fn add(&mut self, s: Sample) {
        let best = self.0.get_or_insert(s);
        best.wall = best.wall.min(s.wall);
        best.cpu = best.cpu.min(s.cpu);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let server = TestServer::start(&args[2]);
        println!("{}", server.url());
        // Serve until the parent closes our stdin.
        let _ = std::io::stdin().lines().count();
        return;
    }
    let size_mib: usize = args.get(1).map_or(1024, |s| s.parse().expect("SIZE_MIB"));
    let runs: usize = args.get(2).map_or(3, |s| s.parse().expect("RUNS"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("payload.tar.zst");

    eprintln!("writing {size_mib} MiB of random bytes…");
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut out = std::io::BufWriter::with_capacity(8 << 20, fs::File::create(&file).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&block);
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let sha256 = hex::encode(hasher.finish().as_ref());
    let length = (size_mib as u64) << 20;

    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = url::Url::parse(line.trim())
        .unwrap()
        .join("payload.tar.zst")
        .unwrap();
    let target = FetchTarget {
        url: url.clone(),
        length,
        sha256,
    };
    let state = dir.path().join("state");
    let mb = length as f64 / 1e6;

    let fetch = |durable: bool| {
        let _ = fs::remove_dir_all(&state);
        let mut cache = PayloadCache::new(&state);
        cache.set_durable(durable);
        let fetcher = Fetcher::new(cache, &NetworkOptions::default()).unwrap();
        let (start, cpu0) = (Instant::now(), cpu(libc::RUSAGE_SELF));
        assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
        let sample = Sample {
            wall: start.elapsed(),
            cpu: cpu(libc::RUSAGE_SELF) - cpu0,
        };
        drop(fetcher);
        sample
    };
    let show = |s: Sample| {
        format!(
            "{:4.0} MB/s ({:.2} s, CPU {:.2} s)",
            mb / s.wall.as_secs_f64(),
            s.wall.as_secs_f64(),
            s.cpu.as_secs_f64()
        )
    };
    let (mut curl_best, mut wua_best, mut unsafe_best) = (Best(None), Best(None), Best(None));
    for run in 1..=runs {
        let out = dir.path().join("curl.out");
        let (start, cpu0) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
        let status = Command::new("curl")
            .args(["-s", "-f", "-o"])
            .arg(&out)
            .arg(url.as_str())
            .status()
            .expect("run curl");
        let curl = Sample {
            wall: start.elapsed(),
            cpu: cpu(libc::RUSAGE_CHILDREN) - cpu0,
        };
        assert!(status.success(), "curl failed");
        let _ = fs::remove_file(&out);
        curl_best.add(curl);
        let wua = fetch(true);
        wua_best.add(wua);
        let unsafe_io = fetch(false);
        unsafe_best.add(unsafe_io);
        eprintln!(
            "run {run}: curl -o {}; wua fsynced {}; wua unsafe_io {}; server CPU so far {:.2} s",
            show(curl),
            show(wua),
            show(unsafe_io),
            process_cpu(server.id()).as_secs_f64()
        );
    }
    let _ = fs::remove_dir_all(&state);
    drop(server.stdin.take());
    let _ = server.wait();
    let (curl, wua, unsafe_io) = (
        curl_best.0.unwrap(),
        wua_best.0.unwrap(),
        unsafe_best.0.unwrap(),
    );
    let ratio = |s: Sample| curl.wall.as_secs_f64() / s.wall.as_secs_f64();
    println!("{size_mib} MiB over loopback, best of {runs} runs:");
    println!("  curl -o (no hash, no fsync)     {}", show(curl));
    println!(
        "  wua, SHA-256 + fsync + commit   {}  {:.2}x curl",
        show(wua),
        ratio(wua)
    );
    println!(
        "  wua, SHA-256 + commit (unsafe_io) {}  {:.2}x curl",
        show(unsafe_io),
        ratio(unsafe_io)
    );
}
