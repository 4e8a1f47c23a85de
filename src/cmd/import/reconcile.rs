//! The reconcile after a complete listing: rows the mirror holds that the
//! listing did not name, looked up one by one.
//!
//! Offset paging over a set that changes while it is walked can skip an
//! object, so a row missing from a listing proves nothing by itself; only
//! Clerk's own answer that the object is gone makes a tombstone.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{Batch, End, Run, Step};
use crate::clock;
use crate::event::Kind;
use crate::import::{ApiClient, MAX_LIMIT};
use crate::store::import::{Counts, Mode};

impl Run {
    /// The rows the complete listing of `kind` did not name, looked up one
    /// by one (memberships: in their organization's list).
    pub(super) async fn reconcile(
        &mut self,
        client: &ApiClient,
        kind: Kind,
        began: i64,
    ) -> Result<End, Step> {
        if kind == Kind::Invitation {
            // Clerk has no look-up of one invitation, nor deletes them.
            return Ok(End::Complete);
        }
        let unlisted = self
            .store(move |i| i.unlisted(kind, began))
            .await
            .map_err(Step::Store)?;
        if unlisted.is_empty() {
            return Ok(End::Complete);
        }
        tracing::info!(
            kind = kind.name(),
            rows = unlisted.len(),
            "looking up rows the listing did not name"
        );
        let mut gone = Vec::new();
        let mut found = Vec::new();
        if kind == Kind::Membership {
            let mut by_org: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
            for (id, org) in unlisted {
                by_org.entry(org).or_default().push(id);
            }
            for (org, ids) in by_org {
                if self.stopped() {
                    return Ok(End::Stopped);
                }
                let Some(org) = org else { continue };
                let listed = match client.get_organization(&org).await.map_err(Step::Api)? {
                    // A deleted organization has no memberships left.
                    None => Vec::new(),
                    Some(_) => {
                        let mut all = Vec::new();
                        let mut pages = client.org_membership_pages(&org, MAX_LIMIT);
                        while let Some(page) = pages.next_page().await.map_err(Step::Api)? {
                            all.extend(page);
                        }
                        all
                    }
                };
                let present: std::collections::HashSet<String> =
                    listed.iter().filter_map(|raw| object_id(raw)).collect();
                for id in ids {
                    if present.contains(&id) {
                        if let Some(raw) = listed
                            .iter()
                            .find(|r| object_id(r).as_deref() == Some(id.as_str()))
                        {
                            found.push(raw.clone());
                        }
                    } else {
                        gone.push(id);
                    }
                }
            }
        } else {
            for (id, _) in unlisted {
                if self.stopped() {
                    return Ok(End::Stopped);
                }
                let object = match kind {
                    Kind::User => client.get_user(&id).await,
                    _ => client.get_organization(&id).await,
                }
                .map_err(Step::Api)?;
                match object {
                    Some(raw) => found.push(raw),
                    None => gone.push(id),
                }
            }
        }
        // Objects the listing skipped (offset paging over a changing set)
        // are merged like the others, but not counted as listed again.
        if !found.is_empty() {
            let mut batch = Batch::default();
            for raw in found {
                batch.push(kind, Box::<str>::from(raw).into_string());
            }
            batch.listed = 0;
            self.merge(kind, batch, Mode::Merge).await?;
            self.flush().await?;
        }
        let confirmed = clock::now_ms();
        let deleted = self
            .store(move |i| i.tombstones(kind, &gone, confirmed))
            .await
            .map_err(Step::Store)?;
        self.add(
            kind,
            &Counts {
                deleted,
                ..Counts::default()
            },
        );
        Ok(End::Complete)
    }
}

fn object_id(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Id>(raw.get()).ok()?.id
}
