//! The Users panel: who may log in. Passwords are typed twice and never shown, kept or logged;
//! the broker checks the user, hashes the password off its router, saves the users file and
//! applies the change to the next login.

use crate::broker::{BrokerHandle, Command};

use super::reply::{self, Notice, Pending};
use super::runner::Live;

/// State of the Users panel.
#[derive(Default)]
pub struct UsersPanel {
    name: String,
    email: String,
    password: String,
    again: String,
    /// The user whose password is being changed.
    changing: Option<String>,
    notice: Option<Notice>,
    pending: Option<Pending>,
}

impl UsersPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        reply::settle(&mut self.pending, &mut self.notice);
        let users = &live.snapshot.users;

        let mut anonymous = users.allow_anonymous;
        if ui
            .checkbox(
                &mut anonymous,
                "Allow anonymous logins (clients without a user name)",
            )
            .changed()
        {
            let what = if anonymous { "allowed" } else { "refused" };
            match Pending::ask(
                broker,
                move |reply| Command::SetAllowAnonymous {
                    allow: anonymous,
                    reply: Some(reply),
                },
                format!("Anonymous logins {what}"),
            ) {
                Ok(p) => self.pending = Some(p),
                Err(n) => self.notice = Some(n),
            }
        }
        if let Some(path) = &live.snapshot.users_path {
            ui.label(format!("Saved to {}", path.display()));
        }
        ui.separator();

        egui::Grid::new("users-grid")
            .striped(true)
            .num_columns(4)
            .show(ui, |ui| {
                for h in ["User", "E-mail", "", ""] {
                    ui.strong(h);
                }
                ui.end_row();
                for u in &users.users {
                    ui.monospace(&u.username);
                    ui.label(u.email.as_deref().unwrap_or("—"));
                    let name = &u.username;
                    if reply::row_button(
                        ui,
                        "Change password",
                        &format!("Change password of {name}"),
                    )
                    .clicked()
                    {
                        self.changing = Some(name.clone());
                        self.name = name.clone();
                        self.email = u.email.clone().unwrap_or_default();
                        self.password.clear();
                        self.again.clear();
                    }
                    if reply::row_button(ui, "Delete", &format!("Delete user {name}")).clicked() {
                        let n = name.clone();
                        match Pending::ask(
                            broker,
                            move |reply| Command::RemoveUser {
                                username: n,
                                reply: Some(reply),
                            },
                            format!("Deleted user {name}"),
                        ) {
                            Ok(p) => self.pending = Some(p),
                            Err(n) => self.notice = Some(n),
                        }
                    }
                    ui.end_row();
                }
            });
        if users.users.is_empty() {
            ui.label("No users yet.");
        }
        ui.separator();

        match &self.changing {
            Some(name) => ui.strong(format!("New password for {name}")),
            None => ui.strong("Add a user"),
        };
        egui::Grid::new("user-form").num_columns(2).show(ui, |ui| {
            let l = ui.label("User name");
            ui.add_enabled(
                self.changing.is_none(),
                egui::TextEdit::singleline(&mut self.name).hint_text("e.g. alice"),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("E-mail (optional)");
            ui.add(egui::TextEdit::singleline(&mut self.email).hint_text("e.g. alice@lab.example"))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Password");
            ui.add(egui::TextEdit::singleline(&mut self.password).password(true))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Password again");
            ui.add(egui::TextEdit::singleline(&mut self.again).password(true))
                .labelled_by(l.id);
            ui.end_row();
        });
        ui.horizontal(|ui| {
            let busy = self.pending.is_some();
            let action = if self.changing.is_some() {
                "Set password"
            } else {
                "Add user"
            };
            if ui.add_enabled(!busy, egui::Button::new(action)).clicked() {
                self.submit(live, broker);
            }
            if self.changing.is_some() && ui.button("Cancel").clicked() {
                self.changing = None;
                self.clear();
            }
            if busy {
                ui.spinner();
            }
        });
        reply::show(ui, &self.notice);
    }

    fn clear(&mut self) {
        self.name.clear();
        self.email.clear();
        self.password.clear();
        self.again.clear();
    }

    fn submit(&mut self, live: &Live, broker: &BrokerHandle) {
        let name = self.name.trim().to_owned();
        let email = Some(self.email.trim().to_owned()).filter(|e| !e.is_empty());
        let problem = if name.is_empty() {
            Some("the user name is empty".to_string())
        } else if self.password.is_empty() {
            Some("the password is empty".into())
        } else if self.password != self.again {
            Some("the two passwords differ".into())
        } else if email
            .as_deref()
            .is_some_and(|e| !e.contains('@') || e.contains(char::is_whitespace))
        {
            Some("the e-mail address is not valid".into())
        } else if self.changing.is_none() && live.snapshot.users.find(&name).is_some() {
            Some(format!("{name:?} is already a user"))
        } else {
            live.snapshot
                .users
                .check_unique(&name, email.as_deref())
                .err()
                .map(|e| e.to_string())
        };
        if let Some(p) = problem {
            self.notice = Some(Notice::error(format!("Not saved: {p}")));
            return;
        }
        // The plain password leaves the form now, for the broker to check and hash.
        let password = std::mem::take(&mut self.password);
        self.again.clear();
        let done = if self.changing.take().is_some() {
            format!("Password of {name} changed")
        } else {
            format!("Added user {name}")
        };
        self.name.clear();
        self.email.clear();
        match Pending::ask(
            broker,
            move |reply| Command::UpsertUser {
                username: name,
                email,
                password,
                reply: Some(reply),
            },
            done,
        ) {
            Ok(p) => self.pending = Some(p),
            Err(n) => self.notice = Some(n),
        }
    }
}
