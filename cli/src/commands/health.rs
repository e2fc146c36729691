//! `cbctl health`: grpc.health.v1 Check; exit 0 only when SERVING.

use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{Output, conn::Ctx, error::Error, output};

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

#[derive(Serialize)]
struct HealthJson {
    endpoint: String,
    status: &'static str,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    let mut client = ctx.health_on(ctx.channel().await?);
    let resp = ctx
        .call(client.check(HealthCheckRequest {
            service: args.service,
        }))
        .await?;
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    let name = status.as_str_name();
    match ctx.output {
        Output::Json => output::print_json_pretty(&HealthJson {
            endpoint: ctx.endpoint.clone(),
            status: name,
        })?,
        Output::Table => output::println(&format!("{}: {name}", ctx.endpoint))?,
    }
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Error::NotServing {
            endpoint: ctx.endpoint.clone(),
            status: name.to_owned(),
        })
    }
}
