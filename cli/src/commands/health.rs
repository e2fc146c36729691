//! `cbctl health`: grpc.health.v1 Check; exit 0 only when SERVING.

use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{conn::Ctx, error::Error, output::Show};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to ask about [default: the whole daemon].
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "NAME"
    )]
    pub service: String,
}

/// The services cbd reports health for, besides the whole daemon ("").
const KNOWN_SERVICES: &str = "cbd.v1.Breakers, cbd.v1.Admin, cbd.v1.Leader";

#[derive(Serialize)]
struct HealthJson {
    endpoint: String,
    status: &'static str,
}

impl Show for HealthJson {
    fn json(&self) -> impl Serialize + '_ {
        self
    }

    fn table(&self) -> Result<String, Error> {
        Ok(format!("{}: {}", self.endpoint, self.status))
    }
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    let mut client = ctx.health_on(ctx.channel().await?);
    let resp = ctx
        .call(client.check(HealthCheckRequest {
            service: args.service.clone(),
        }))
        .await
        .map_err(|e| match e {
            // The health service's NOT_FOUND is about the service, not a breaker.
            Error::NotFound(_) => Error::NotFound(format!(
                "health: cbd has no service {:?} (it has \"\", {KNOWN_SERVICES})",
                args.service
            )),
            other => other,
        })?;
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    let name = status.as_str_name();
    ctx.output.print(&HealthJson {
        endpoint: ctx.endpoint.clone(),
        status: name,
    })?;
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Error::NotServing {
            endpoint: ctx.endpoint.clone(),
            status: name.to_owned(),
        })
    }
}
