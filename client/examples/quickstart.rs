//! Guard a call with a cbd breaker: the README's Rust quickstart, run by CI as is.

use cbd_client::{CallError, Client, WatchEvent, WatchFilter, pb};
use futures::StreamExt;

async fn charge(card: &str) -> Result<String, std::io::Error> {
    if card == "declined" {
        return Err(std::io::Error::other("payment provider timed out"));
    }
    Ok(format!("charged {card}"))
}

#[tokio::main]
async fn main() -> Result<(), cbd_client::Error> {
    let endpoint = std::env::var("CBD_ENDPOINT").unwrap_or("http://127.0.0.1:7411".into());
    let client = Client::builder(endpoint).build()?; // lazy: fine while cbd is down

    // Create the breaker (an operator would run `cbctl put payments.charge ...`).
    let spec = pb::BreakerSpec {
        consecutive_failures: Some(2),
        open_duration: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    };
    let put = pb::PutBreakerRequest {
        name: "payments.charge".into(),
        spec: Some(spec),
        ..Default::default()
    };
    client.admin_client().put_breaker(put).await?;

    let payments = client.breaker("payments.charge");
    for card in ["4242", "declined", "declined", "4242"] {
        // Acquire, run, report (Ok = success, Err = failure) with the call's duration.
        match payments.call(|| charge(card)).await {
            Ok(receipt) => println!("{receipt}"),
            Err(CallError::Rejected(r)) => {
                let retry = r.retry_after.unwrap_or_default().as_secs_f64().round();
                println!("payments are {}, retry in {retry} s", r.state);
            }
            Err(CallError::Inner(e)) => println!("failed: {e}"), // counted as a failure
            Err(CallError::Client(e)) => return Err(e),          // e.g. NOT_FOUND
        }
    }

    // Follow changes from revision 1 on; the stream resumes by itself after a
    // disconnect, with nothing lost or repeated.
    let mut watch = client.watch(WatchFilter::prefix("payments."), Some(1));
    while let Some(item) = watch.next().await {
        if let WatchEvent::Event(e) = item? {
            println!(
                "{} {} {} {}",
                e.revision,
                e.name,
                e.state().as_str_name(),
                e.reason
            );
            if e.state() == pb::State::Open {
                break;
            }
        }
    }
    Ok(())
}
