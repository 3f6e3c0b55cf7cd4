//! The baseline: signoff-example's private page at GET /dashboard, for a
//! fixed user, with no session and no auth.
//!
//! ```sh
//! bare-axum --listen 127.0.0.1:3001
//! ```

use std::net::SocketAddr;

use axum::{routing::get, Router};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = Router::new().route(
        "/dashboard",
        get(|| async { axum_login_app::dashboard("alice") }),
    );
    let listener = axum_login_app::listen(args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
