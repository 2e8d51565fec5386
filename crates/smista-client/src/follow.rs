//! Following the active node of an active/standby group: a `--target` list of nodes, and the
//! channel to the one whose health says it routes. A standby answers UNAVAILABLE naming the
//! active; a client that is given every node needs no load balancer in front of them.

use tonic_health::pb::health_check_response::ServingStatus;

use crate::connect::Credentials;

/// The nodes of a `--target` list (comma-separated, blanks ignored).
pub fn target_list(targets: &str) -> Vec<&str> {
    targets.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

/// What gRPC health on `ch` says of `service` ("": the server as a whole).
pub async fn serving_status(ch: tonic::transport::Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let r = HealthClient::new(ch).check(HealthCheckRequest { service: service.to_owned() }).await?;
    Ok(ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// A channel to the active node among `targets` (comma-separated): the first whose health says
/// `smista.v1.ContactService` is SERVING; failing that, the first reachable one (its answer says
/// why it does not route, e.g. UNAVAILABLE naming the active node).
pub async fn active_channel(creds: &Credentials, targets: &str) -> Result<tonic::transport::Channel, String> {
    let list = target_list(targets);
    if let [one] = list.as_slice() {
        return creds.channel(one).await;
    }
    let mut fallback = None;
    let mut last = format!("no target in `{targets}`");
    for t in list {
        match creds.channel(t).await {
            Ok(ch) => {
                if serving_status(ch.clone(), "smista.v1.ContactService")
                    .await
                    .is_ok_and(|s| s == ServingStatus::Serving)
                {
                    return Ok(ch);
                }
                fallback.get_or_insert(ch);
            }
            Err(e) => last = e,
        }
    }
    fallback.ok_or(last)
}
