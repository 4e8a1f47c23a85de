//! The four instance-wide lists, and walking a list a page at a time.
//!
//! A walk pages by `offset`, oldest first, until a page comes back shorter
//! than the limit. The users' list carries no total, and a count taken
//! beforehand goes stale while the walk runs, so a short page is the only
//! end a walk can trust.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::bad_body;
use super::{segment, ApiClient, ApiError};

/// The largest page Clerk serves. Above it Clerk silently serves its
/// default of 10, which would end a walk after the first page.
pub const MAX_LIMIT: u32 = 500;

/// The four instance-wide lists `import` walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `GET /v1/users`: a bare array.
    Users,
    /// `GET /v1/organizations`, with `include_members_count=true`.
    Organizations,
    /// `GET /v1/organization_memberships`, every organization's.
    Memberships,
    /// `GET /v1/organization_invitations`: the instance-wide list, which
    /// unlike an organization's own also has the invitations made through a
    /// verified domain.
    Invitations,
}

impl Kind {
    /// All four, in the order a walk takes them: what a membership or an
    /// invitation points at comes first.
    pub const ALL: [Kind; 4] = [
        Kind::Users,
        Kind::Organizations,
        Kind::Memberships,
        Kind::Invitations,
    ];

    /// The name Clerk gives the list, as in its path.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Organizations => "organizations",
            Kind::Memberships => "organization_memberships",
            Kind::Invitations => "organization_invitations",
        }
    }

    /// The query before `limit` and `offset`. Oldest first, which every one
    /// of the four accepts (`order_by` takes `created_at` with a `+`/`-`
    /// prefix on each): what is created during a walk then lands after the
    /// walk's position instead of shifting every later page.
    fn query(self) -> &'static str {
        match self {
            Kind::Organizations => "include_members_count=true&order_by=%2Bcreated_at",
            _ => "order_by=%2Bcreated_at",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ApiClient {
    /// One page of a list, oldest first: at most `limit` (1 to
    /// [`MAX_LIMIT`]) objects from `offset` on. A page shorter than `limit`
    /// is the last.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn list_page(
        &self,
        kind: Kind,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        self.list(&Listing::Kind(kind).path(offset, limit)?).await
    }

    /// One page of an organization's memberships
    /// (`GET /v1/organizations/{id}/memberships`), oldest first.
    ///
    /// # Errors
    /// See [`ApiError`]; an organization Clerk does not know is a
    /// [`ApiError::Rejected`] with status `404`.
    pub async fn list_org_memberships(
        &self,
        org_id: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        let listing = Listing::OrgMemberships(org_id.to_owned());
        self.list(&listing.path(offset, limit)?).await
    }

    /// A walk over a whole list, a page at a time.
    pub fn pages(&self, kind: Kind, limit: u32) -> Pages {
        Pages::new(self.clone(), Listing::Kind(kind), limit)
    }

    /// A walk over one organization's memberships, a page at a time.
    pub fn org_membership_pages(&self, org_id: &str, limit: u32) -> Pages {
        Pages::new(
            self.clone(),
            Listing::OrgMemberships(org_id.to_owned()),
            limit,
        )
    }

    async fn list(&self, path: &str) -> Result<Vec<Box<RawValue>>, ApiError> {
        self.list_with(path, |_| None, |raw| raw).await
    }

    /// The page at `path`: its objects made by `read` from the whole body
    /// where it can, else each cut out raw and made by `raw`.
    async fn list_with<T>(
        &self,
        path: &str,
        read: impl FnOnce(&str) -> Option<Vec<T>>,
        raw: impl FnMut(Box<RawValue>) -> T,
    ) -> Result<Vec<T>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            data: Vec<Box<RawValue>>,
        }
        let body = self.get(path, false).await?.unwrap_or_default();
        if let Some(objects) = std::str::from_utf8(&body).ok().and_then(read) {
            return Ok(objects);
        }
        let parsed = match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => serde_json::from_slice::<Page>(&body).map(|p| p.data),
            _ => serde_json::from_slice::<Vec<Box<RawValue>>>(&body),
        };
        parsed
            .map(|objects| objects.into_iter().map(raw).collect())
            .map_err(|e| bad_body(path, "a list", &e))
    }
}

/// A walk over a list, a page at a time, from offset 0 until a page comes
/// back shorter than the limit.
#[derive(Debug)]
pub struct Pages {
    client: ApiClient,
    listing: Listing,
    limit: u32,
    offset: u64,
    done: bool,
}

#[derive(Debug)]
enum Listing {
    Kind(Kind),
    OrgMemberships(String),
}

impl Listing {
    /// The path of the page of at most `limit` objects from `offset` on.
    fn path(&self, offset: u64, limit: u32) -> Result<String, ApiError> {
        check_limit(limit)?;
        Ok(match self {
            Listing::Kind(kind) => format!(
                "/v1/{}?{}&limit={limit}&offset={offset}",
                kind.name(),
                kind.query()
            ),
            Listing::OrgMemberships(org) => format!(
                "/v1/organizations/{}/memberships?order_by=%2Bcreated_at&limit={limit}&offset={offset}",
                segment(org)?
            ),
        })
    }
}

impl Pages {
    fn new(client: ApiClient, listing: Listing, limit: u32) -> Self {
        Pages {
            client,
            listing,
            limit,
            offset: 0,
            done: false,
        }
    }

    /// The next page, or `None` once the list is done. A failed page can
    /// be asked for again.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<Box<RawValue>>>, ApiError> {
        self.next_page_with(|_| None, |raw| raw).await
    }

    /// [`Pages::next_page`], its objects made by `read` from the whole
    /// body where it can (one pass over it), else each cut out raw and
    /// made by `raw`.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn next_page_with<T>(
        &mut self,
        read: impl FnOnce(&str) -> Option<Vec<T>>,
        raw: impl FnMut(Box<RawValue>) -> T,
    ) -> Result<Option<Vec<T>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let path = self.listing.path(self.offset, self.limit)?;
        let page = self.client.list_with(&path, read, raw).await?;
        self.offset += page.len() as u64;
        if page.len() < self.limit as usize {
            self.done = true;
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// How many objects the walk has been given so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the last page has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

pub(super) fn check_limit(limit: u32) -> Result<(), ApiError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "a page limit must be 1 to {MAX_LIMIT}, not {limit}"
        )))
    }
}
