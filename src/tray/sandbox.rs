//! The window's "New sandbox…" dialog: its form parsed into a grant once, at the edge, and
//! the grant made with its ready-to-paste recipes (the same [`crate::recipe`] texts as
//! `keyferry grant NAME --recipe …`). The window shows each recipe with the placeholder
//! masked; the full text stays here, in zeroized memory, until it is copied.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::api::Api;
use crate::domain::NewGrant;
use crate::expiry::{parse_lifetime, GRANT_TTL_MAX, GRANT_TTL_MIN};
use crate::protocol::GrantIssued;
use crate::recipe::{self, Recipe};
use crate::sandbox_home;
use crate::secret::Secret;

/// The dialog's fields as typed (text boxes: every number arrives as text).
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxForm {
    pub credential: String,
    pub name: String,
    /// `8h`, `30m`, `7d`.
    pub lifetime: String,
    /// Tokens per UTC day; empty for none.
    #[serde(default)]
    pub daily_token_budget: String,
    /// Requests in flight at once; empty for no cap.
    #[serde(default)]
    pub max_concurrent: String,
}

/// A field the dialog must mark, and the sentence that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct FormError {
    /// The form field (`name`, `lifetime`, …), or `grant` when the agent refused.
    pub field: &'static str,
    pub message: String,
}

impl FormError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A limit typed in a box: empty is "none"; 0 would refuse every request, so it is refused.
fn at_least_one<T>(field: &'static str, text: &str, what: &str) -> Result<Option<T>, FormError>
where
    T: std::str::FromStr + From<u8> + PartialOrd,
{
    let t = text.trim().replace(['_', ','], "");
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(Some(n)),
        Ok(_) => Err(FormError::new(
            field,
            format!(
                "0 would refuse every request: give 1 or more, or leave it empty for no {what}"
            ),
        )),
        Err(_) => Err(FormError::new(
            field,
            format!("{t:?} is not a whole number: give 1 or more, or leave it empty for no {what}"),
        )),
    }
}

impl SandboxForm {
    /// The grant this form asks for. The name's own rules are the agent's (it says them).
    ///
    /// # Errors
    /// The field that is wrong, with the fix.
    pub fn parse(&self) -> Result<NewGrant, FormError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(FormError::new(
                "name",
                "give the sandbox a name (1-64 of A-Z a-z 0-9 . _ -), as `keyferry grant NAME` takes",
            ));
        }
        // The name is also a folder's under `homes_root` (a Codex home): `..` would climb
        // out of it, and the agent's own rule allows dots.
        if name.starts_with('.') {
            return Err(FormError::new(
                "name",
                "a sandbox name cannot start with a dot; start it with a letter or digit",
            ));
        }
        if self.credential.trim().is_empty() {
            return Err(FormError::new(
                "credential",
                "pick the credential it spends",
            ));
        }
        let ttl = parse_lifetime(self.lifetime.trim(), GRANT_TTL_MIN, GRANT_TTL_MAX)
            .map_err(|e| FormError::new("lifetime", e.to_string()))?;
        Ok(NewGrant {
            name: name.to_owned(),
            credential: self.credential.trim().to_owned(),
            ttl,
            max_concurrent: at_least_one("max_concurrent", &self.max_concurrent, "cap")?,
            daily_token_budget: at_least_one(
                "daily_token_budget",
                &self.daily_token_budget,
                "budget",
            )?,
        })
    }
}

/// One recipe as the window shows it: the placeholder masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipeCard {
    pub recipe: Recipe,
    pub label: &'static str,
    pub shown: String,
}

/// The dialog's last page: the grant and its recipes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxMade {
    pub name: String,
    pub credential: String,
    pub expires: String,
    /// The placeholder, masked (`kfp_…1a2b`).
    pub masked: String,
    pub replaced: bool,
    pub recipes: Vec<RecipeCard>,
    /// The folders written for the sandbox (a Codex home), shown so they can be found.
    pub homes: Vec<String>,
}

/// The recipes' full texts, placeholder included: held by the app until copied or closed.
pub struct Copyable(Vec<(Recipe, Zeroizing<String>)>);

impl Copyable {
    /// The full text of `recipe`, for the clipboard.
    #[must_use]
    pub fn text(&self, recipe: Recipe) -> Option<&str> {
        self.0
            .iter()
            .find(|(r, _)| *r == recipe)
            .map(|(_, t)| t.as_str())
    }
}

impl std::fmt::Debug for Copyable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Copyable({} recipes, redacted)", self.0.len())
    }
}

const RECIPES: [(Recipe, &str); 4] = [
    (Recipe::Docker, "docker run"),
    (Recipe::Compose, "compose service"),
    (Recipe::Bwrap, "bubblewrap"),
    (Recipe::Ssh, "keyferry ssh"),
];

/// Where the window writes a sandbox's home folder (a Codex home): under the state dir,
/// one folder per grant and per address the sandbox reaches the gateway at.
#[must_use]
pub fn homes_root() -> PathBuf {
    crate::paths::state_dir().join("sandboxes")
}

/// Makes the grant `form` asks for and renders every recipe for it. A provider that needs
/// a home folder (Codex) gets one under `homes` (checked before the grant is made, so a
/// refusal replaces no live grant); `host` reads the host's variables that pass through.
///
/// # Errors
/// The form's field, or the agent's refusal (`field: "grant"`), or a folder that cannot be
/// written (`field: "home"`).
pub fn make(
    api: &Api,
    form: &SandboxForm,
    homes: &Path,
    host: impl Fn(&str) -> Option<String>,
) -> Result<(SandboxMade, Copyable), FormError> {
    let spec = form.parse()?;
    let status = api
        .status()
        .map_err(|e| FormError::new("grant", e.message))?;
    let provider = status
        .credentials
        .iter()
        .find(|c| c.name == spec.credential)
        .and_then(|c| c.inspection.as_ref())
        .and_then(|i| crate::provider::for_kind(i.kind));
    let needs_home = provider.is_some_and(|p| p.sandbox_home_var().is_some());
    let home = |place: &str| homes.join(&spec.name).join(place);
    if let (true, Some(p)) = (needs_home, provider) {
        for place in ["bridge", "host"] {
            sandbox_home::check(&home(place), p)
                .map_err(|e| FormError::new("home", e.to_string()))?;
        }
    }
    let issued = api
        .grant(&spec)
        .map_err(|e| FormError::new("grant", e.message))?;
    let bridge = GrantIssued {
        base_url: recipe::bridge_url(&issued, &status.listeners),
        ..issued.clone()
    };
    let provider = sandbox_home::provider_of(&issued);
    let mut written = Vec::new();
    let mut texts = Vec::new();
    for (r, _) in RECIPES {
        let (at, place) = match r {
            Recipe::Docker | Recipe::Compose => (&bridge, "bridge"),
            Recipe::Bwrap | Recipe::Ssh => (&issued, "host"),
        };
        let dir = needs_home.then(|| home(place));
        if let Some(d) = &dir {
            if !written.iter().any(|w: &PathBuf| w == d) {
                sandbox_home::write(d, provider, &at.base_url)
                    .map_err(|e| FormError::new("home", e.to_string()))?;
                written.push(d.clone());
            }
        }
        let vars = sandbox_home::variables(at, dir.as_deref(), &host);
        texts.push((r, recipe::render(r, at, &vars, dir.as_deref())));
    }
    let secret: &Secret = &issued.placeholder.0;
    let masked = crate::gateway::placeholder::masked(secret);
    let made = SandboxMade {
        name: issued.grant.name.clone(),
        credential: issued.grant.credential.clone(),
        expires: issued.grant.expires.clone(),
        replaced: issued.replaced,
        recipes: RECIPES
            .iter()
            .zip(&texts)
            .map(|((r, label), (_, text))| RecipeCard {
                recipe: *r,
                label,
                shown: text.replace(secret.expose(), &masked),
            })
            .collect(),
        masked,
        homes: written.iter().map(|p| crate::paths::display(p)).collect(),
    };
    Ok((made, Copyable(texts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, lifetime: &str, budget: &str, conc: &str) -> SandboxForm {
        SandboxForm {
            credential: "claude".into(),
            name: name.into(),
            lifetime: lifetime.into(),
            daily_token_budget: budget.into(),
            max_concurrent: conc.into(),
        }
    }

    #[test]
    fn a_form_becomes_a_grant() {
        let g = form(" box-1 ", "2h", "100_000", "").parse().unwrap();
        assert_eq!(g.name, "box-1");
        assert_eq!(g.ttl, std::time::Duration::from_secs(7200));
        assert_eq!(g.daily_token_budget, Some(100_000));
        assert_eq!(g.max_concurrent, None);
    }

    #[test]
    fn each_bad_field_is_named_with_its_fix() {
        let field = |f: SandboxForm| f.parse().unwrap_err().field;
        assert_eq!(field(form("", "2h", "", "")), "name");
        assert_eq!(field(form("..", "2h", "", "")), "name", "a folder above");
        assert_eq!(field(form(".box", "2h", "", "")), "name");
        assert_eq!(field(form("b", "two hours", "", "")), "lifetime");
        assert_eq!(field(form("b", "400d", "", "")), "lifetime");
        let zero = form("b", "2h", "0", "").parse().unwrap_err();
        assert_eq!(zero.field, "daily_token_budget");
        assert!(zero.message.contains("leave it empty"), "{zero}");
        assert_eq!(field(form("b", "2h", "", "many")), "max_concurrent");
    }

    #[test]
    fn copyable_texts_are_redacted_in_debug() {
        let c = Copyable(vec![(Recipe::Docker, Zeroizing::new("kfp_secret".into()))]);
        assert_eq!(c.text(Recipe::Docker), Some("kfp_secret"));
        assert_eq!(c.text(Recipe::Ssh), None);
        assert!(!format!("{c:?}").contains("kfp_secret"));
    }
}
