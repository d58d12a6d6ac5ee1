//! Turns the library's menu model and icon state into a Tauri tray. No decisions here.

use std::sync::Mutex;

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, MenuItemKind, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Wry};

use keyferry::tray::{EntryKind, IconState, MenuModel};

/// macOS menu bars want black template images; other panels get the coloured set.
#[cfg(target_os = "macos")]
macro_rules! tray_png {
    ($state:literal) => {
        include_bytes!(concat!("../../icons/tray/", $state, "@2x.png"))
    };
}
#[cfg(not(target_os = "macos"))]
macro_rules! tray_png {
    ($state:literal) => {
        include_bytes!(concat!("../../icons/tray/", $state, "-color@2x.png"))
    };
}

fn icon(state: IconState) -> Image<'static> {
    let bytes: &[u8] = match state {
        IconState::Ok => tray_png!("ok"),
        IconState::Expiring => tray_png!("expiring"),
        IconState::Expired => tray_png!("expired"),
        IconState::Locked => tray_png!("locked"),
    };
    Image::from_bytes(bytes).expect("icons/tray PNGs are valid")
}

/// Where the icon was last clicked (logical points: its bottom centre), for the panel.
static LAST_CLICK: Mutex<Option<(f64, f64)>> = Mutex::new(None);

#[must_use]
#[cfg(target_os = "macos")]
pub fn last_click() -> Option<(f64, f64)> {
    *LAST_CLICK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn on_icon(tray: &TrayIcon, event: TrayIconEvent) {
    let TrayIconEvent::Click {
        rect,
        button: MouseButton::Left,
        button_state: MouseButtonState::Up,
        ..
    } = event
    else {
        return;
    };
    let app = tray.app_handle();
    let scale = app
        .primary_monitor()
        .ok()
        .flatten()
        .map_or(1.0, |m| m.scale_factor());
    let at = rect.position.to_logical::<f64>(scale);
    let size = rect.size.to_logical::<f64>(scale);
    *LAST_CLICK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some((at.x + size.width / 2.0, at.y + size.height));
    crate::window::toggle(app);
}

pub struct Tray {
    icon: TrayIcon,
    menu: Menu<Wry>,
    model: MenuModel,
    state: IconState,
}

pub struct TrayCell(pub Mutex<Option<Tray>>);

fn build_menu(app: &AppHandle, model: &MenuModel) -> tauri::Result<Menu<Wry>> {
    let mut items: Vec<Box<dyn IsMenuItem<Wry>>> = Vec::new();
    for e in &model.items {
        items.push(match e.kind {
            EntryKind::Separator => Box::new(PredefinedMenuItem::separator(app)?),
            EntryKind::Item => Box::new(MenuItem::with_id(
                app,
                &e.id,
                &e.label,
                e.enabled,
                None::<&str>,
            )?),
            EntryKind::Check { checked } => Box::new(CheckMenuItem::with_id(
                app,
                &e.id,
                &e.label,
                e.enabled,
                checked,
                None::<&str>,
            )?),
        });
    }
    let refs: Vec<&dyn IsMenuItem<Wry>> = items.iter().map(AsRef::as_ref).collect();
    Menu::with_items(app, &refs)
}

pub fn create(
    app: &AppHandle,
    model: MenuModel,
    state: IconState,
    tooltip: &str,
    on_click: impl Fn(&AppHandle, &str) + Send + Sync + 'static,
) -> tauri::Result<Tray> {
    let menu = build_menu(app, &model)?;
    let icon = TrayIconBuilder::with_id("keyferry")
        .icon(icon(state))
        .icon_as_template(cfg!(target_os = "macos"))
        .tooltip(tooltip)
        .menu(&menu)
        // macOS: a left click opens the panel under the icon, the menu is a right click
        // away; a Linux panel shows the menu itself on any click.
        .show_menu_on_left_click(!cfg!(target_os = "macos"))
        .on_tray_icon_event(on_icon)
        .on_menu_event(move |app, event| on_click(app, event.id().as_ref()))
        .build(app)?;
    Ok(Tray {
        icon,
        menu,
        model,
        state,
    })
}

impl Tray {
    /// Applies a new model: in place when only labels and states changed, else rebuilt.
    pub fn update(
        &mut self,
        app: &AppHandle,
        model: MenuModel,
        state: IconState,
        tooltip: &str,
    ) -> tauri::Result<()> {
        if model.same_shape(&self.model) {
            for (new, old) in model.items.iter().zip(&self.model.items) {
                if new == old {
                    continue;
                }
                match (self.menu.get(new.id.as_str()), new.kind) {
                    (Some(MenuItemKind::MenuItem(i)), _) => {
                        i.set_text(&new.label)?;
                        i.set_enabled(new.enabled)?;
                    }
                    (Some(MenuItemKind::Check(i)), EntryKind::Check { checked }) => {
                        i.set_text(&new.label)?;
                        i.set_enabled(new.enabled)?;
                        i.set_checked(checked)?;
                    }
                    _ => {}
                }
            }
        } else {
            self.menu = build_menu(app, &model)?;
            self.icon.set_menu(Some(self.menu.clone()))?;
        }
        self.model = model;
        if state != self.state {
            self.icon
                .set_icon_with_as_template(Some(icon(state)), cfg!(target_os = "macos"))?;
            self.state = state;
        }
        self.icon.set_tooltip(Some(tooltip))?;
        Ok(())
    }

    /// A check item toggles itself when clicked; put it back to what the model says.
    pub fn resync_check(&self, id: &str) {
        if let (Some(MenuItemKind::Check(i)), Some(e)) = (self.menu.get(id), self.model.get(id)) {
            if let EntryKind::Check { checked } = e.kind {
                let _ = i.set_checked(checked);
            }
        }
    }
}
