//! The headless broker with its packet trace watched the way an open Trace panel watches it
//! (the trace on, the ring fetched ten times a second), for measuring what the trace costs a
//! busy broker with the same loads as `scripts/bench.sh`:
//!
//! ```text
//! cargo run --release --no-default-features --example traced_broker -- PORT TOPICS.ron [--off]
//! ```
//!
//! `--off` runs the same broker without watching, for the comparison. Stops on Ctrl-C/SIGTERM
//! and prints how many events it fetched and how many the trace dropped.

use std::time::Duration;

use mqtt_lab::broker::{Broker, Config, topic_list};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(topics)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: traced_broker PORT TOPICS.ron [--off]");
    };
    let watch = !args.iter().any(|a| a == "--off");
    let config = Config {
        listen: format!("127.0.0.1:{port}").parse()?,
        topics: topic_list::load(std::path::Path::new(topics))?,
        sys_interval: None,
        max_inflight: 100,
        max_queued: 100_000,
        ..Config::default()
    };
    let broker = Broker::start(config).await?;
    println!("mqtt-lab: listening on mqtt://{}", broker.local_addr());
    let trace = broker.trace();
    let fetched = tokio::spawn(async move {
        let mut last = 0;
        let mut fetched = 0u64;
        if !watch {
            return fetched;
        }
        trace.watch(true);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(new) = trace.since(last).await else {
                return fetched;
            };
            if let Some(e) = new.last() {
                last = e.seq;
            }
            fetched += new.len() as u64;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let dropped = broker.trace().dropped();
    fetched.abort();
    broker.shutdown().await;
    eprintln!("trace: watched {watch}, dropped {dropped}");
    Ok(())
}
