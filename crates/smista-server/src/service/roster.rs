//! The roster's RPCs of `AdminService` (`PutRosterOperator`, `RetireRosterOperator`,
//! `ListRoster`, `ListRosterAudit`): request checks and conversions around `app::roster`.

use smista_core::roster::{channels_text, parse_channels, parse_skills, skills_text};
use smista_proto::v1 as pb;
use tonic::{Request, Status};

use crate::app::roster::{Rostered, SOURCE_ADMIN};
use crate::app::Shared;
use crate::config::roster::RosterEntry;
use crate::wire::bounds::Bounded;
use crate::wire::convert;

/// An entry as the wire shows it.
#[must_use]
pub fn operator_pb(r: &Rostered) -> pb::RosterOperator {
    pb::RosterOperator {
        operator_id: r.entry.id.clone(),
        display_name: r.entry.name.clone(),
        group: r.entry.group.clone(),
        skills: r.entry.skills.iter().map(|s| pb::Skill { name: s.name.clone(), level: u32::from(s.level) }).collect(),
        channels: r
            .entry
            .channels
            .iter()
            .map(|(c, n)| pb::ChannelCapacity {
                channel: convert::channel_pb(*c) as i32,
                max_concurrent: u32::from(*n),
            })
            .collect(),
        retired: r.entry.retired,
        version: u64::try_from(r.version).unwrap_or(0),
        updated_unix_ms: u64::try_from(r.updated_unix_ms).unwrap_or(0),
        source: r.source.clone(),
    }
}

/// The entry a request states, checked as the configuration's are.
fn entry(s: &Shared, o: &pb::RosterOperator) -> Result<RosterEntry, Status> {
    // Through the text forms: one set of rules for the file, the ledger and the wire.
    let skills = o
        .skills
        .iter()
        .map(|k| {
            if k.name.contains([':', ';']) {
                return Err(Status::invalid_argument(format!(
                    "skills: `{}` is not a valid skill name",
                    smista_core::error::clip(&k.name)
                )));
            }
            Ok(format!("{}:{}", k.name, k.level))
        })
        .collect::<Result<Vec<_>, Status>>()?
        .join(";");
    let channels = o
        .channels
        .iter()
        .map(|c| Ok(format!("{}:{}", convert::channel(c.channel)?.as_str(), c.max_concurrent)))
        .collect::<Result<Vec<_>, Status>>()?
        .join(";");
    let e = RosterEntry {
        id: o.operator_id.clone(),
        name: o.display_name.clone(),
        group: o.group.clone(),
        skills: parse_skills(&skills).map_err(|p| Status::invalid_argument(format!("skills: {p}")))?,
        channels: parse_channels(&channels).map_err(|p| Status::invalid_argument(format!("channels: {p}")))?,
        retired: o.retired,
    };
    e.check(s.roster.groups()).map_err(|(field, p)| match field {
        "group" => Status::not_found(format!("group: {p}")),
        _ => Status::invalid_argument(format!("{field}: {p}")),
    })?;
    // Skills and channels checked again in their stored form (a round trip).
    debug_assert_eq!(parse_skills(&skills_text(&e.skills)).ok().as_ref(), Some(&e.skills));
    debug_assert_eq!(parse_channels(&channels_text(&e.channels)).ok().as_ref(), Some(&e.channels));
    Ok(e)
}

/// `PutRosterOperator`.
pub async fn put(
    s: &Shared,
    request: &Request<pb::PutRosterOperatorRequest>,
) -> Result<pb::PutRosterOperatorResponse, Status> {
    request.get_ref().check_bounds()?;
    let p = s.principal(request)?;
    let req = request.get_ref();
    let o = req.operator.as_ref().ok_or_else(|| Status::invalid_argument("operator: required"))?;
    let e = entry(s, o)?;
    let expected = req
        .expected_version
        .map(|v| i64::try_from(v).map_err(|_| Status::invalid_argument("expected_version too large")))
        .transpose()?;
    let (r, _) = crate::app::roster::put(s, e, expected, &p.name, SOURCE_ADMIN).await?;
    Ok(pb::PutRosterOperatorResponse { operator: Some(operator_pb(&r)) })
}

/// `RetireRosterOperator`.
pub async fn retire(
    s: &Shared,
    request: &Request<pb::RetireRosterOperatorRequest>,
) -> Result<pb::RetireRosterOperatorResponse, Status> {
    let p = s.principal(request)?;
    let id = &request.get_ref().operator_id;
    smista_core::validate_id("operator_id", id).map_err(crate::wire::error::client_error)?;
    let (r, _) = crate::app::roster::retire(s, id, &p.name).await?;
    Ok(pb::RetireRosterOperatorResponse { operator: Some(operator_pb(&r)) })
}

/// A page size (0: `default`; at most 1000) and the position a page token names.
fn page(page_size: u32, token: &str, default: usize) -> Result<(usize, usize), Status> {
    let size = match page_size {
        0 => default,
        n @ 1..=1000 => n as usize,
        n => return Err(Status::invalid_argument(format!("page_size {n} is above 1000"))),
    };
    let start = if token.is_empty() {
        0
    } else {
        token.parse::<usize>().map_err(|_| Status::invalid_argument("page_token does not parse"))?
    };
    Ok((size, start))
}

/// `ListRoster`: by id, from the operator after the token's.
pub fn list(s: &Shared, req: &pb::ListRosterRequest) -> Result<pb::ListRosterResponse, Status> {
    let (size, start) = page(req.page_size, &req.page_token, 500)?;
    let all: Vec<Rostered> = s.roster.list().into_iter().filter(|r| req.include_retired || !r.entry.retired).collect();
    if start > all.len() {
        return Err(Status::invalid_argument("page_token is beyond the roster"));
    }
    let end = (start + size).min(all.len());
    Ok(pb::ListRosterResponse {
        operators: all[start..end].iter().map(operator_pb).collect(),
        next_page_token: if end < all.len() { end.to_string() } else { String::new() },
        mode: s.roster.mode().as_str().to_owned(),
    })
}

/// `ListRosterAudit`: oldest first, from the ledger.
pub async fn audit(s: &Shared, req: &pb::ListRosterAuditRequest) -> Result<pb::ListRosterAuditResponse, Status> {
    let (size, start) = page(req.page_size, &req.page_token, 100)?;
    if !req.operator_id.is_empty() {
        smista_core::validate_id("operator_id", &req.operator_id).map_err(crate::wire::error::client_error)?;
    }
    let Some(l) = &s.ledger else {
        return Err(Status::failed_precondition("no ledger: roster changes are not recorded"));
    };
    let offset = i64::try_from(start).map_err(|_| Status::invalid_argument("page_token does not parse"))?;
    // One more than the page: whether there is a next one.
    let mut rows = l
        .roster_audit(&req.operator_id, offset, i64::try_from(size).unwrap_or(1000) + 1)
        .await
        .map_err(crate::wire::error::ledger_status)?;
    let more = rows.len() > size;
    rows.truncate(size);
    let next_page_token = if more { (start + size).to_string() } else { String::new() };
    Ok(pb::ListRosterAuditResponse {
        records: rows
            .into_iter()
            .map(|a| pb::RosterAuditRecord {
                operator_id: a.operator_id,
                version: u64::try_from(a.version).unwrap_or(0),
                at_unix_ms: u64::try_from(a.at_unix_ms).unwrap_or(0),
                actor: a.actor,
                change: a.change,
                old_value: a.old_value,
                new_value: a.new_value,
            })
            .collect(),
        next_page_token,
    })
}
