//! For the load benchmark only: the machine's HTTP limit and a fake puppet.
//!
//! `bare_server PORT [DELAY_MS]` answers `success` to every request (after
//! DELAY_MS, to play a slow puppet) and counts them; `GET /__count` answers
//! the count. With no delay it is the "bare actix-web handler" the benchmark
//! compares the manager against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(7900);
    let delay = Duration::from_millis(args.next().and_then(|d| d.parse().ok()).unwrap_or(0));
    let count = Arc::new(AtomicU64::new(0));
    HttpServer::new(move || {
        let count = count.clone();
        App::new().default_service(web::to(move |req: HttpRequest, _body: web::Bytes| {
            let count = count.clone();
            async move {
                if req.path() == "/__count" {
                    return HttpResponse::Ok().body(count.load(Ordering::Relaxed).to_string());
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                count.fetch_add(1, Ordering::Relaxed);
                HttpResponse::Ok()
                    .content_type("text/plain")
                    .body("success")
            }
        }))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
