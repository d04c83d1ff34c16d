//! The parsers of DPS's answers as the upload uses them, reachable without the network: for
//! `crate::fuzzing` only. Thin adaptors over the private functions of [`super`]; no logic here.

use super::client::{Reply, http_date, json_or_absent, query_answer, retry_after};
use super::{Prepared, answer, compare};
use crate::error::Result;
use serde_json::Value;
use std::time::Duration;

/// The judgement of a bulk operation's answer (HTTP `status`, `body`) for items with these
/// registration IDs: whether it succeeded in full, and the items it named, by lowercase
/// registration ID, with their `errorCode` and `errorStatus`.
pub(crate) type BulkAnswer = (bool, Vec<(String, Option<i64>, Option<String>)>);

/// [`answer`] on a reply.
pub(crate) fn bulk(status: u16, body: &str, registration_ids: &[&str]) -> Result<BulkAnswer> {
    let items: Vec<Prepared> = registration_ids
        .iter()
        .enumerate()
        .map(|(i, id)| Prepared {
            seq: i as i64 + 1,
            registration_id: id.to_string(),
            json: Vec::new(),
        })
        .collect();
    let refs: Vec<&Prepared> = items.iter().collect();
    let reply = Reply {
        status,
        body: body.to_string(),
        continuation: None,
    };
    let a = answer(&reply, &refs)?;
    let mut named: Vec<_> = a.errored.into_iter().map(|(k, (c, s))| (k, c, s)).collect();
    named.sort();
    Ok((a.successful, named))
}

/// An enrollment, attestation mechanism or registration state as read (404: `None`).
pub(crate) fn json(status: u16, body: &str) -> Result<Option<Value>> {
    let reply = Reply {
        status,
        body: body.to_string(),
        continuation: None,
    };
    json_or_absent("fuzz", reply)
}

/// A query page: its enrollments and the continuation token of the next one.
pub(crate) fn query(
    status: u16,
    body: &str,
    next: Option<String>,
    asked: Option<&str>,
) -> Result<(Vec<Value>, Option<String>)> {
    let reply = Reply {
        status,
        body: body.to_string(),
        continuation: next,
    };
    query_answer(reply, asked)
}

/// The field differences the station reports between what it sent and what DPS shows.
pub(crate) fn differences(sent: &Value, shown: &Value) -> Vec<String> {
    compare::fields(sent, shown)
}

/// The attestation differences between what was sent and what DPS holds.
pub(crate) fn attestation_differences(sent: &Value, held: &Value) -> Vec<String> {
    compare::attestation(sent, held)
}

/// A `Retry-After` header's wait, and an HTTP date's Unix seconds.
pub(crate) fn wait(header: &str) -> (Option<Duration>, Option<u64>) {
    (retry_after(header), http_date(header))
}
