//! The tray's logic, free of any GUI toolkit: the state kept from the agent's events, the
//! menu (lines, labels, enabled states), the icon state, countdown and "2 min ago" texts,
//! and the window's view. `src-tauri` only turns [`MenuModel`] into menu items and
//! [`IconState`] into an image.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::credential::{human_duration, Credential, Kind};
use crate::domain::{
    Access, ApprovalRequest, CredentialStatus, CredentialUsage, Health, Peer, UsageState,
};
use crate::protocol::{Event, Status};
use crate::secret::Secret;

mod grants;
mod menu;
pub mod sandbox;
mod state;
mod text;
mod view;

pub use grants::*;
pub use menu::*;
pub use state::*;
pub use text::*;
pub use view::*;

#[cfg(test)]
mod tests;
