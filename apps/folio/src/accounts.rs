//! `folio admin create|reset-password`: administrator accounts, straight on the database
//! through the domain's repositories and its password rules, with no server running.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Subcommand};
use folio_domain::accounts::{Email, Password, Role};
use folio_domain::ports::{PasswordHasher, UserRepository};
use folio_http::Argon2Hasher;
use folio_runtime::bookstore::BookstoreArgs;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an administrator account (refused if the e-mail is taken).
    Create(AccountArgs),
    /// Give an administrator account a new password. Tokens already issued stay valid
    /// until they expire (12 h); set a new FOLIO_TOKEN_SECRET to end them all.
    ResetPassword(AccountArgs),
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// The account's e-mail.
    #[arg(long)]
    pub email: String,
    /// The password (8 to 128 characters). Without it, one line is read from standard
    /// input, so it stays out of the shell's history: `folio admin create --email a@b.c < pw`.
    #[arg(long, env = "FOLIO_NEW_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl AccountArgs {
    fn password(&self) -> anyhow::Result<Password> {
        let raw = match &self.password {
            Some(p) => p.clone(),
            None => {
                eprintln!("password for {} (one line on standard input):", self.email);
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        Ok(Password::parse(&raw)?)
    }
}

pub async fn run(cmd: &AdminCommand, store_args: &BookstoreArgs) -> anyhow::Result<()> {
    crate::ensure_sqlite_dir(&store_args.database_url)?;
    let store = Arc::new(
        folio_sql::connect(&store_args.database_url)
            .await
            .with_context(|| {
                format!(
                    "opening {}",
                    folio_runtime::bookstore::redact(&store_args.database_url)
                )
            })?,
    );
    let hasher = Argon2Hasher::new();
    let (args, creating) = match cmd {
        AdminCommand::Create(a) => (a, true),
        AdminCommand::ResetPassword(a) => (a, false),
    };
    let email = Email::parse(&args.email)?;
    let existing = store.find_by_email(&email).await?;
    match (&existing, creating) {
        (Some(u), true) => bail!(
            "{} already has an account ({}); `folio admin reset-password` changes an \
             administrator's password",
            email.as_str(),
            if u.role == Role::Admin {
                "an administrator"
            } else {
                "a reader"
            }
        ),
        (None, false) => bail!(
            "there is no account {}; `folio admin create` makes one",
            email.as_str()
        ),
        (Some(u), false) if u.role != Role::Admin => bail!(
            "{} is a reader's account; folio admin only resets administrators' passwords",
            email.as_str()
        ),
        _ => {}
    }
    let password = args.password()?;
    let hash = hasher.hash(&password).await?;
    // Creates the account, or re-keys the administrator: the repository's one way to set
    // an administrator's credentials, also used by FOLIO_ADMIN_* at startup.
    let user = store.ensure_admin(&email, &hash, Utc::now()).await?;
    if creating {
        println!(
            "administrator {} created (id {})",
            user.email.as_str(),
            user.id.get()
        );
    } else {
        println!("password of administrator {} changed", user.email.as_str());
    }
    if store_args.admin_email == email.as_str() && store_args.admin_password.is_some() {
        println!(
            "note: {} is also FOLIO_ADMIN_EMAIL, so the next start sets FOLIO_ADMIN_PASSWORD again",
            email.as_str()
        );
    }
    Ok(())
}
