//! For the load benchmark only: sends pre-built requests (the
//! `bench_requests` format, `METHOD<TAB>PATH<TAB>BODY` per line) at a fixed
//! rate, and measures each answer from when its request was *due*, not
//! from when it was sent. A load generator that waits for an answer before
//! sending the next request stops sending while the server stalls, and so
//! never measures the requests a stall delays ("coordinated omission"); this
//! one keeps the schedule, so a stall shows in the latencies of every
//! request that was due during it.
//!
//! `paced_load BASE_URL REQUESTS_FILE RATE SECONDS CONNECTIONS`
//! prints one line: `sent ok errors p50_ms p99_ms p999_ms max_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

struct Request {
    post: bool,
    path: String,
    body: String,
}

fn read_requests(path: &str) -> std::io::Result<Vec<Request>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (method, path, body) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Request {
                post: method == "POST",
                path: path.to_owned(),
                body: body.to_owned(),
            })
        })
        .collect())
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, file, rate, seconds, connections] = &args[..] else {
        anyhow::bail!("usage: paced_load BASE_URL REQUESTS_FILE RATE SECONDS CONNECTIONS");
    };
    let rate: f64 = rate.parse()?;
    let seconds: f64 = seconds.parse()?;
    let connections: usize = connections.parse()?;
    let requests = Arc::new(read_requests(file)?);
    let total = (rate * seconds) as usize;
    anyhow::ensure!(
        requests.len() >= total,
        "{file} holds {} requests; {total} are needed (every request distinct)",
        requests.len()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    // At most `connections` requests in flight; a request that waits for one
    // is still timed from when it was due.
    let in_flight = Arc::new(Semaphore::new(connections));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, requests, in_flight) = (client.clone(), requests.clone(), in_flight.clone());
        let url = format!("{base}{}", requests[i].path);
        tasks.push(tokio::spawn(async move {
            let _slot = in_flight.acquire_owned().await.ok()?;
            let request = &requests[i];
            let sent = if request.post {
                let kind = if request.body.starts_with('{') {
                    "application/json"
                } else {
                    "text/xml"
                };
                client
                    .post(&url)
                    .header("content-type", kind)
                    .body(request.body.clone())
                    .send()
                    .await
            } else {
                client.get(&url).send().await
            };
            let ok = matches!(&sent, Ok(r) if r.status().is_success());
            Some((ok, due.elapsed()))
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some((true, took)) => latencies.push(took),
            _ => errors += 1,
        }
    }
    latencies.sort_unstable();
    println!(
        "{total} {} {errors} {:.3} {:.3} {:.3} {:.3}",
        latencies.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    Ok(())
}
