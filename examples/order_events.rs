//! A sibling service's view of the public order-event feed: subscribes as a
//! named durable consumer, prints one line per event, and acknowledges every
//! `--ack-every` events (and at each checkpoint), so that a restart resumes
//! after the last acknowledged event. Events delivered after that ack come
//! again after a crash: a consumer with effects records the positions it
//! applied with its effects and drops a repeat by position (exactly once).
//!
//! ```bash
//! TOKEN=$(cargo run --release -- token --sub notifications --role service)
//! COMMERCE_TOKEN=$TOKEN cargo run --example order_events -- --consumer notifications
//! ```
//!
//! Options: `--url` (default `http://localhost:8084`, or `COMMERCE_URL`),
//! `--consumer` (required; an admin creates it with CreateConsumer),
//! `--ack-every` (default 100), `--limit N` (stop after N events; default: run
//! until interrupted). The token comes from `COMMERCE_TOKEN`.

use clap::Parser;
use commerce::proto::commerce::events::v1::{
    AckRequest, EventType, SubscribeRequest, order_event_service_client::OrderEventServiceClient,
    subscribe_response::Message,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

#[derive(Parser)]
struct Args {
    /// The service's address.
    #[arg(long, env = "COMMERCE_URL", default_value = "http://localhost:8084")]
    url: String,
    /// The named consumer to subscribe as.
    #[arg(long)]
    consumer: String,
    /// Acknowledge after this many events.
    #[arg(long, default_value_t = 100)]
    ack_every: usize,
    /// Stop (after acknowledging) once this many events were processed.
    #[arg(long)]
    limit: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let token = std::env::var("COMMERCE_TOKEN").map_err(|_| "set COMMERCE_TOKEN to a service token")?;
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(args.url.clone())?.connect().await?;
    let mut client = OrderEventServiceClient::with_interceptor(channel, move |mut request: Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    });

    let subscribe = SubscribeRequest {
        consumer: args.consumer.clone(),
        ..Default::default()
    };
    let mut stream = client.subscribe(subscribe).await?.into_inner();
    let (mut processed, mut unacked) = (0usize, 0usize);
    while let Some(response) = stream.message().await? {
        let (last, checkpoint) = match response.message {
            Some(Message::Event(event)) => {
                let kind = EventType::try_from(event.event_type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                println!(
                    "{} {} order={} version={}",
                    event.position, kind, event.order_id, event.stream_version
                );
                processed += 1;
                unacked += 1;
                (event.position, false)
            }
            Some(Message::Checkpoint(checkpoint)) => (checkpoint.position, true),
            None => continue,
        };
        let done = args.limit.is_some_and(|limit| processed >= limit);
        // A checkpoint covers everything before it (filtered events too): acknowledge it.
        if checkpoint || unacked >= args.ack_every || done {
            let ack = AckRequest {
                consumer: args.consumer.clone(),
                position: last,
            };
            client.ack(ack).await?;
            unacked = 0;
        }
        if done {
            break;
        }
    }
    eprintln!("processed {processed} events");
    Ok(())
}
