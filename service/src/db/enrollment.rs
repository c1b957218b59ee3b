//! Enrollment tokens and revoked instances.
//!
//! A token row holds only the SHA-256 of the token. Redeeming one is a conditional
//! update (`used_at IS NULL`) inside a transaction, so of two concurrent exchanges of the
//! same token exactly one succeeds, on both backends.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{enrollment_tokens, instances, revoked_instances};
use super::{now, DbConnection, DbError};

/// Instance statuses after which an instance's agent may no longer act.
pub const GONE_STATUSES: [&str; 2] = ["deleted", "released"];

/// Records a token (by its hash) for `instance`, valid until `expires_at`.
pub fn insert_token(
    conn: &mut DbConnection,
    token_sha256: &str,
    instance: &str,
    expires_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::insert_into(enrollment_tokens::table)
        .values((
            enrollment_tokens::token_sha256.eq(token_sha256),
            enrollment_tokens::instance_id.eq(instance),
            enrollment_tokens::expires_at.eq(expires_at),
            enrollment_tokens::used_at.eq(None::<NaiveDateTime>),
            enrollment_tokens::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Why a token could not be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token with this hash was ever issued.
    Unknown,
    /// The token was issued for another instance.
    OtherInstance,
    /// The token was used before.
    Used,
    /// The token's time ran out.
    Expired,
    /// The instance no longer exists, or was deleted or released.
    InstanceGone,
}

/// Marks the token with this hash used, if it is unused, unexpired, bound to
/// `instance`, and the instance still exists and is not revoked.
pub fn redeem(
    conn: &mut DbConnection,
    token_sha256: &str,
    instance: &str,
) -> Result<Result<(), Refusal>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let row: Option<(String, NaiveDateTime, Option<NaiveDateTime>)> = enrollment_tokens::table
            .find(token_sha256)
            .select((
                enrollment_tokens::instance_id,
                enrollment_tokens::expires_at,
                enrollment_tokens::used_at,
            ))
            .first(conn)
            .optional()?;
        let Some((bound_to, expires_at, used_at)) = row else {
            return Ok(Err(Refusal::Unknown));
        };
        let t = now();
        if bound_to != instance {
            return Ok(Err(Refusal::OtherInstance));
        }
        if used_at.is_some() {
            return Ok(Err(Refusal::Used));
        }
        if expires_at <= t {
            return Ok(Err(Refusal::Expired));
        }
        if is_gone(conn, instance)? {
            return Ok(Err(Refusal::InstanceGone));
        }
        // The condition on `used_at` makes the update the arbiter between concurrent
        // exchanges: only one of them changes the row.
        let changed = diesel::update(
            enrollment_tokens::table
                .filter(enrollment_tokens::token_sha256.eq(token_sha256))
                .filter(enrollment_tokens::used_at.is_null()),
        )
        .set(enrollment_tokens::used_at.eq(Some(t)))
        .execute(conn)?;
        Ok(if changed == 1 {
            Ok(())
        } else {
            Err(Refusal::Used)
        })
    })
}

/// Whether `instance` no longer exists, is deleted or released, or was revoked.
pub fn is_gone(conn: &mut DbConnection, instance: &str) -> Result<bool, DbError> {
    let revoked = revoked_instances::table
        .find(instance)
        .select(revoked_instances::instance_id)
        .first::<String>(conn)
        .optional()?
        .is_some();
    if revoked {
        return Ok(true);
    }
    let status: Option<String> = instances::table
        .find(instance)
        .select(instances::status)
        .first(conn)
        .optional()?;
    Ok(match status {
        None => true,
        Some(status) => GONE_STATUSES.contains(&status.as_str()),
    })
}

/// Records that `instance`'s credentials no longer work, and drops its unused tokens.
pub fn revoke(conn: &mut DbConnection, instance: &str) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let known = revoked_instances::table
            .find(instance)
            .select(revoked_instances::instance_id)
            .first::<String>(conn)
            .optional()?
            .is_some();
        if !known {
            diesel::insert_into(revoked_instances::table)
                .values((
                    revoked_instances::instance_id.eq(instance),
                    revoked_instances::revoked_at.eq(now()),
                ))
                .execute(conn)?;
        }
        diesel::delete(
            enrollment_tokens::table.filter(enrollment_tokens::instance_id.eq(instance)),
        )
        .execute(conn)?;
        Ok(())
    })
}

/// Every instance whose agents relays must refuse: revoked ones, and those whose row
/// says deleted or released.
pub fn revoked(conn: &mut DbConnection) -> Result<Vec<String>, DbError> {
    let mut ids: Vec<String> = revoked_instances::table
        .select(revoked_instances::instance_id)
        .load(conn)?;
    let gone: Vec<String> = instances::table
        .filter(instances::status.eq_any(GONE_STATUSES))
        .select(instances::id)
        .load(conn)?;
    ids.extend(gone);
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
