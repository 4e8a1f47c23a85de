//! The object types the mirror keeps, each described once: its table, its
//! columns, where in Clerk's object each column is read from, and what a
//! deletion does to it. The store builds its statements from these
//! descriptions, so a new object type is one more [`Spec`] here.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::fields::{int, text};

/// An object type of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Organization,
    Membership,
    Invitation,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::User,
        Kind::Organization,
        Kind::Membership,
        Kind::Invitation,
    ];

    /// The description of this type.
    pub fn spec(self) -> &'static Spec {
        match self {
            Kind::User => &USER,
            Kind::Organization => &ORGANIZATION,
            Kind::Membership => &MEMBERSHIP,
            Kind::Invitation => &INVITATION,
        }
    }

    /// The name the changes feed and reports use: `user`, `organization`,
    /// `membership`, `invitation`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The position of this type in [`Kind::ALL`], for per-type tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an event type asks of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Upsert,
    Delete,
}

/// The mirrored type and action of `event_type`, if it is mirrored.
pub fn action(event_type: &str) -> Option<(Kind, Action)> {
    let (kind, action) = match event_type {
        "user.created" | "user.updated" => (Kind::User, Action::Upsert),
        "user.deleted" => (Kind::User, Action::Delete),
        "organization.created" | "organization.updated" => (Kind::Organization, Action::Upsert),
        "organization.deleted" => (Kind::Organization, Action::Delete),
        "organizationMembership.created" | "organizationMembership.updated" => {
            (Kind::Membership, Action::Upsert)
        }
        "organizationMembership.deleted" => (Kind::Membership, Action::Delete),
        // An invitation is never deleted: accepted and revoked are statuses.
        "organizationInvitation.created"
        | "organizationInvitation.accepted"
        | "organizationInvitation.revoked" => (Kind::Invitation, Action::Upsert),
        _ => return None,
    };
    Some((kind, action))
}

/// One object type: its table and the columns besides the ones every table
/// has (`clerk_id`, `created_at`, `updated_at`, `deleted_at`, `data`).
#[derive(Debug)]
pub struct Spec {
    pub kind: Kind,
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static [Column],
}

/// A mirrored column.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub source: Source,
    pub ty: Ty,
    /// It has an index: an update that leaves it be does not name it, so
    /// its index entries are not rewritten.
    pub indexed: bool,
    /// A tombstone keeps it (else it is set to NULL on deletion).
    pub kept: bool,
    /// An object without it leaves the stored value alone.
    pub sticky: bool,
}

/// Where a column's value is read from.
#[derive(Debug)]
pub enum Source {
    /// A path of keys into the object.
    Path(&'static [&'static str]),
    /// The address whose id is `primary_email_address_id`.
    PrimaryEmail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Text,
    Int,
}

/// A column's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Text(String),
    Int(i64),
}

impl Field {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Field::Text(s) => Some(s),
            Field::Int(_) => None,
        }
    }
}

const fn text_at(name: &'static str, path: &'static [&'static str]) -> Column {
    Column {
        name,
        source: Source::Path(path),
        ty: Ty::Text,
        indexed: false,
        kept: true,
        sticky: false,
    }
}

/// Personal fields go with the deletion; `external_id` (the app's own key)
/// stays, so the app can still find what was deleted.
static USER: Spec = Spec {
    kind: Kind::User,
    name: "user",
    table: "users",
    columns: &[
        Column {
            source: Source::PrimaryEmail,
            indexed: true,
            kept: false,
            ..text_at("email", &[])
        },
        Column {
            kept: false,
            ..text_at("first_name", &["first_name"])
        },
        Column {
            kept: false,
            ..text_at("last_name", &["last_name"])
        },
        Column {
            kept: false,
            ..text_at("username", &["username"])
        },
        Column {
            kept: false,
            ..text_at("image_url", &["image_url"])
        },
        Column {
            indexed: true,
            ..text_at("external_id", &["external_id"])
        },
    ],
};

/// `members_count` comes from the API only when asked for, and Clerk
/// changes it without an `organization.updated`: an object without it
/// leaves the stored count alone.
static ORGANIZATION: Spec = Spec {
    kind: Kind::Organization,
    name: "organization",
    table: "organizations",
    columns: &[
        text_at("name", &["name"]),
        text_at("slug", &["slug"]),
        text_at("image_url", &["image_url"]),
        Column {
            ty: Ty::Int,
            sticky: true,
            ..text_at("members_count", &["members_count"])
        },
    ],
};

/// A membership has no top-level ids: they are in its nested organization
/// and user data.
static MEMBERSHIP: Spec = Spec {
    kind: Kind::Membership,
    name: "membership",
    table: "organization_memberships",
    columns: &[
        Column {
            indexed: true,
            ..text_at("organization_id", &["organization", "id"])
        },
        Column {
            indexed: true,
            ..text_at("user_id", &["public_user_data", "user_id"])
        },
        text_at("role", &["role"]),
    ],
};

static INVITATION: Spec = Spec {
    kind: Kind::Invitation,
    name: "invitation",
    table: "organization_invitations",
    columns: &[
        Column {
            indexed: true,
            ..text_at("organization_id", &["organization_id"])
        },
        Column {
            indexed: true,
            ..text_at("email_address", &["email_address"])
        },
        text_at("role", &["role"]),
        text_at("status", &["status"]),
    ],
};

/// The columns of `spec` read from the JSON object `raw`, leniently: a
/// missing value or one of another type is NULL. `None` when `raw` is not
/// an object. Users are read by the faster reader in `fields`, which this
/// agrees with; [`Source::PrimaryEmail`] is not read here.
pub(super) fn read_columns(spec: &Spec, raw: &str) -> Option<Vec<Option<Field>>> {
    let object: HashMap<String, &RawValue> = serde_json::from_str(raw).ok()?;
    Some(
        spec.columns
            .iter()
            .map(|c| match &c.source {
                Source::Path(path) => lookup(&object, path).and_then(|v| value(c.ty, v)),
                Source::PrimaryEmail => None,
            })
            .collect(),
    )
}

/// The value at `path` below `object`; `null` counts as absent.
fn lookup<'a>(object: &HashMap<String, &'a RawValue>, path: &[&str]) -> Option<&'a RawValue> {
    let (first, rest) = path.split_first()?;
    let found = *object.get(*first)?;
    if rest.is_empty() {
        return (found.get() != "null").then_some(found);
    }
    let inner: HashMap<String, &'a RawValue> = serde_json::from_str(found.get()).ok()?;
    lookup(&inner, rest)
}

pub(super) fn value(ty: Ty, raw: &RawValue) -> Option<Field> {
    match ty {
        Ty::Text => text(Some(raw)).map(Field::Text),
        Ty::Int => int(Some(raw)).map(Field::Int),
    }
}
