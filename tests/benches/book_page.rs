//! The book page next to the cheapest page of the same server (docs/contract.md §5: a book
//! view with its event reaches at least half the throughput of `/health/live`, with p99 at
//! most 10 ms at half the peak rate), and how its throughput grows with the catalog.
//!
//! ```sh
//! cargo build --release -p folio
//! FOLIO_BIN=target/release/folio cargo bench -p folio-tests --bench book_page
//! # FOLIO_BENCH_SECONDS (default 10) per load run, FOLIO_BENCH_ROUNDS (default 2),
//! # FOLIO_BENCH_HTTP_PORT (default 39180), FOLIO_BENCH_CATALOG (default 1000,100000)
//! ```
//!
//! It needs `wrk` (Debian's package). The server is a release `folio` process of its own on
//! embedded defaults (the in-process bus, SQLite in a temp dir, both roles), one book added
//! as the admin. `wrk` (2 threads, 16 connections) runs alternately against
//! `/health/live` and the anonymous `GET /api/v1/books/{id}`, which emits a view, for
//! `FOLIO_BENCH_SECONDS` each; the server's CPU time per request comes from its
//! `/proc/<pid>/stat` before and after each run. Then an open-loop generator in this
//! process (never the server's) sends book views at half the best book-page rate, each at
//! its scheduled moment whatever the answers before it, over 16 keep-alive connections (each
//! request written and its answer read by hand, so the generator costs little), and
//! times each from that moment (so a stall counts for every request it delays): p50/p99.
//! Last, the curve: the catalog grown to each `FOLIO_BENCH_CATALOG` size (rows copied from
//! the first book with `sqlite3` while the server is stopped), requests at random ids over
//! the whole catalog (a `wrk` script). A run with any answer other than 200 fails. The last
//! line, `BENCH book_page ...`, is what `scripts/bench` collects.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use folio_tests::bench::{best, cpu_of, env_or, load_average, summary};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_EMAIL: &str = "admin@folio.local";
const ADMIN_PASSWORD: &str = "bench-admin-password";
const CONNECTIONS: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("FOLIO_BENCH_SECONDS", 10) as u64;
    let rounds = env_or("FOLIO_BENCH_ROUNDS", 2);
    let port = env_or("FOLIO_BENCH_HTTP_PORT", 39180);
    let catalog: Vec<usize> = std::env::var("FOLIO_BENCH_CATALOG")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let bin = folio_binary()?;
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(&bin, dir.path(), port).await?;
    let base = server.base.clone();
    let book = server.create_book().await?;
    println!(
        "folio {} (release) on {base}, embedded defaults; wrk -t2 -c{CONNECTIONS} -d{seconds}s; load average {}",
        bin.display(),
        load_average()
    );

    let live_url = format!("{base}/health/live");
    let book_url = format!("{base}/api/v1/books/{book}");
    let (mut live, mut page) = (Vec::new(), Vec::new());
    let (mut live_cpu, mut page_cpu) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (what, url, rates, cpus) in [
            ("/health/live", &live_url, &mut live, &mut live_cpu),
            (
                "GET /api/v1/books/{id}",
                &book_url,
                &mut page,
                &mut page_cpu,
            ),
        ] {
            let r = server.wrk(url, seconds, None)?;
            println!(
                "round {round}: {what:<24} {:>9.0} req/s, p50 {:.2} ms, p99 {:.2} ms (wrk's, closed loop), server CPU {:.1} µs per request",
                r.rate,
                r.p50_ms,
                r.p99_ms,
                r.cpu_per_request * 1e6
            );
            rates.push(r.rate);
            cpus.push(r.cpu_per_request);
        }
    }
    let (live_best, page_best) = (best(&live), best(&page));
    let ratio = page_best / live_best;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (live_us, page_us) = (mean(&live_cpu) * 1e6, mean(&page_cpu) * 1e6);
    println!(
        "best of {rounds}: book page {page_best:.0} req/s, /health/live {live_best:.0} req/s; book page / live = {ratio:.2}; server CPU per request {page_us:.1} µs and {live_us:.1} µs"
    );

    let target = page_best / 2.0;
    let fixed = open_loop(&book_url, target, seconds).await?;
    println!(
        "open loop at {target:.0} req/s (half the peak) for {seconds} s: {} requests sent, {:.0} req/s answered, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (from each request's scheduled moment)",
        fixed.sent, fixed.rate, fixed.p50_ms, fixed.p99_ms, fixed.max_ms
    );

    let mut curve = Vec::new();
    for &size in &catalog {
        server.stop()?;
        grow_catalog(&dir.path().join("folio.db"), size)?;
        server = Server::start(&bin, dir.path(), port).await?;
        let script = dir.path().join(format!("random-{size}.lua"));
        std::fs::write(
            &script,
            format!(
                "request = function()\n  return wrk.format(\"GET\", \"/api/v1/books/\" .. math.random(1, {size}))\nend\n"
            ),
        )?;
        let r = server.wrk(&format!("{base}/api/v1/books/1"), seconds, Some(&script))?;
        println!(
            "{size} books, random ids: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} µs per request",
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.cpu_per_request * 1e6
        );
        curve.push((format!("books{size}_rps"), format!("{:.0}", r.rate)));
        curve.push((
            format!("books{size}_cpu_us"),
            format!("{:.1}", r.cpu_per_request * 1e6),
        ));
    }
    server.stop()?;
    println!("load average {}", load_average());
    let mut figures = vec![
        ("page_rps", format!("{page_best:.0}")),
        ("live_rps", format!("{live_best:.0}")),
        ("ratio", format!("{ratio:.2}")),
        ("page_cpu_us", format!("{page_us:.1}")),
        ("live_cpu_us", format!("{live_us:.1}")),
        ("fixed_rps", format!("{target:.0}")),
        ("fixed_p50_ms", format!("{:.2}", fixed.p50_ms)),
        ("fixed_p99_ms", format!("{:.2}", fixed.p99_ms)),
    ];
    figures.extend(curve.iter().map(|(k, v)| (k.as_str(), v.clone())));
    summary("book_page", &figures);
    Ok(())
}

/// `FOLIO_BIN`, or the release binary in the workspace's target directory.
fn folio_binary() -> anyhow::Result<PathBuf> {
    let bin = match std::env::var_os("FOLIO_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("release/folio"),
    };
    ensure!(
        bin.is_file(),
        "no folio binary at {}: run `cargo build --release -p folio` and set FOLIO_BIN to it",
        bin.display()
    );
    Ok(bin)
}

/// A release `folio` in its own process, on embedded defaults in `dir`.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(bin: &Path, dir: &Path, port: usize) -> anyhow::Result<Server> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("folio.log"))?;
        let child = Command::new(bin)
            .env_remove("KAFKA_BOOTSTRAP")
            .env_remove("RUST_LOG")
            .env_remove("ANALYTICS_WINDOW")
            .env_remove("ANALYTICS_GRACE")
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("FOLIO_DATA_DIR", dir.join("data"))
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join("folio.db").display()),
            )
            .env("FOLIO_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("FOLIO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = server
                .client
                .get(format!("{}/health/ready", server.base))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if Instant::now() > give_up {
                bail!(
                    "folio did not get ready on port {port} within 60 s; its log: {}",
                    dir.join("folio.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in as the admin and adds a book; returns its id.
    async fn create_book(&self) -> anyhow::Result<i64> {
        let api = format!("{}/api/v1", self.base);
        let login: serde_json::Value = self
            .client
            .post(format!("{api}/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = login["token"].as_str().context("no token")?;
        let book: serde_json::Value = self
            .client
            .post(format!("{api}/books"))
            .bearer_auth(token)
            .json(
                &json!({"title": "Dune", "author": "Frank Herbert", "genre": "Science Fiction",
                "description": "", "price_cents": 1999, "currency": "USD"}),
            )
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        book["id"].as_i64().context("no book id")
    }

    /// One `wrk` run, with the server's CPU time per request over it.
    fn wrk(&self, url: &str, seconds: u64, script: Option<&Path>) -> anyhow::Result<WrkRun> {
        let pid = self.child.id().to_string();
        let before = cpu_of(&pid).context("the server's /proc stat")?;
        let mut cmd = Command::new("wrk");
        cmd.args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s")])
            .args(["--latency", "--timeout", "5s"]);
        if let Some(s) = script {
            cmd.arg("-s").arg(s);
        }
        let out = cmd
            .arg(url)
            .output()
            .context("running wrk (apt-get install wrk)")?;
        let after = cpu_of(&pid).context("the server's /proc stat")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(out.status.success(), "wrk failed: {text}");
        ensure!(
            !text.contains("Non-2xx") && !text.contains("Socket errors"),
            "wrk saw errors against {url}:\n{text}"
        );
        let after_word = |word: &str| -> anyhow::Result<&str> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(word))
                .map(str::trim)
                .with_context(|| format!("no {word:?} in wrk's output:\n{text}"))
        };
        let rate: f64 = after_word("Requests/sec:")?.parse()?;
        let requests: f64 = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
        let ms = |v: &str| -> anyhow::Result<f64> {
            let (n, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = n.parse()?;
            Ok(match unit {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                other => bail!("a latency in {other:?}"),
            })
        };
        Ok(WrkRun {
            rate,
            p50_ms: ms(after_word("50%")?)?,
            p99_ms: ms(after_word("99%")?)?,
            cpu_per_request: (after - before).own / requests.max(1.0),
        })
    }

    /// SIGTERM, then waits (up to 30 s) for a clean stop.
    fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > give_up {
                self.child.kill()?;
                bail!("folio did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct WrkRun {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU seconds (user + system) per request answered.
    cpu_per_request: f64,
}

/// Copies the first book until the catalog holds `size` books (ids 1 to `size`).
fn grow_catalog(db: &Path, size: usize) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO books (title, author, genre, description, price_cents, currency, created_at, updated_at) \
         WITH RECURSIVE n(i) AS (SELECT (SELECT count(*) FROM books) + 1 UNION ALL SELECT i + 1 FROM n WHERE i < {size}) \
         SELECT 'Book ' || n.i, b.author, b.genre, b.description, b.price_cents, b.currency, b.created_at, b.updated_at \
         FROM n, (SELECT * FROM books WHERE id = 1) AS b WHERE n.i <= {size}; \
         SELECT count(*), min(id), max(id) FROM books;"
    );
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .context("running sqlite3 (apt-get install sqlite3)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.trim() == format!("{size}|1|{size}"),
        "the catalog should hold ids 1 to {size}, holds (count|min|max) {}",
        text.trim()
    );
    Ok(())
}

struct OpenLoop {
    sent: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Sends `rate` requests a second to `url` for `seconds`, each at its scheduled moment
/// over `CONNECTIONS` keep-alive connections (one per task, requests dealt round-robin);
/// latency runs from the scheduled moment. Bounded: `rate * seconds` requests, and each
/// task gives up 30 s after the schedule ends.
async fn open_loop(url: &str, rate: f64, seconds: u64) -> anyhow::Result<OpenLoop> {
    let total = (rate * seconds as f64) as usize;
    ensure!(total > 0, "a rate of {rate} req/s sends nothing");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    // A request written by hand and its answer read by hand: the generator must cost far
    // less than the server, or it, not the server, sets the latency (an HTTP client
    // library cost about as much per request as the page itself).
    let (host, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .with_context(|| format!("{url} is not http://host/path"))?;
    let request: Arc<[u8]> = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        .into_bytes()
        .into();
    let page: Arc<str> = format!("{host}/{path}").into();
    let host: Arc<str> = host.into();
    let mut tasks = Vec::new();
    for k in 0..CONNECTIONS {
        let (host, page, request) = (host.clone(), page.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(&*host).await?;
            conn.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(4096);
            let give_up = start + interval * total as u32 + Duration::from_secs(30);
            let mut latencies = Vec::with_capacity(total / CONNECTIONS + 1);
            for j in (k..total).step_by(CONNECTIONS) {
                let due = start + interval * j as u32;
                tokio::time::sleep_until(due).await;
                ensure!(
                    tokio::time::Instant::now() < give_up,
                    "the server fell behind by 30 s"
                );
                conn.write_all(&request).await?;
                let status =
                    tokio::time::timeout(Duration::from_secs(10), answer(&mut conn, &mut buf))
                        .await
                        .context("no answer within 10 s")??;
                ensure!(status == 200, "{page}: {status}");
                latencies.push(due.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    Ok(OpenLoop {
        sent: all.len(),
        rate: all.len() as f64 / took,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

/// Reads one HTTP/1.1 answer with a `Content-Length` (as folio's pages have) from `conn`;
/// returns its status.
async fn answer(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head.split(' ').nth(1).context("no status line")?.parse()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("an answer without Content-Length")?;
            let whole = end + 4 + length;
            while buf.len() < whole {
                ensure!(
                    conn.read_buf(buf).await? > 0,
                    "the server closed the connection"
                );
            }
            ensure!(buf.len() == whole, "bytes past the answer to one request");
            return Ok(status);
        }
        ensure!(
            conn.read_buf(buf).await? > 0,
            "the server closed the connection"
        );
    }
}
