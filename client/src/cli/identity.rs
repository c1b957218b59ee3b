//! The identity commands of `osc`: `project-*`, `user-*`, `role-*`,
//! `role-assignment-list` and `catalog-list`, printed as python-openstackclient prints
//! them (lists: `ID`, `Name`, ...; show: lower-case fields in alphabetical order).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::error::CliError;
use crate::auth::CatalogEntry;
use crate::client::Client;
use crate::identity::{AssignmentFilter, NewUser, Project, RoleAssignment, User};
use crate::output::{self, Format, Record};

/// Identity commands (Keystone v3 on the identity service the client authenticated
/// against). Names or ids are accepted wherever a project, user or role is named.
#[derive(Debug, Clone, Subcommand)]
pub enum IdentityCommand {
    /// Create a project (administrators)
    ProjectCreate {
        /// New project name
        #[arg(value_name = "NAME")]
        name: String,
        /// Project description
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Create it disabled (its tokens do not work until it is enabled)
        #[arg(long)]
        disable: bool,
    },
    /// List projects (administrators)
    ProjectList,
    /// Show a project
    ProjectShow {
        /// Project name or id
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// Delete projects (administrators); refused while a project has containers
    ProjectDelete {
        /// Project names or ids
        #[arg(value_name = "PROJECT", required = true)]
        projects: Vec<String>,
    },
    /// Create a user (administrators)
    UserCreate(UserCreateArgs),
    /// List users (administrators)
    UserList,
    /// Show a user
    UserShow {
        /// User name or id
        #[arg(value_name = "USER")]
        user: String,
    },
    /// Delete users (administrators); their tokens stop working at once
    UserDelete {
        /// User names or ids
        #[arg(value_name = "USER", required = true)]
        users: Vec<String>,
    },
    /// List roles
    RoleList,
    /// Grant a user a role in a project (administrators)
    RoleAdd(RoleArgs),
    /// Revoke a user's role in a project (administrators)
    RoleRemove(RoleArgs),
    /// List role assignments
    RoleAssignmentList(AssignmentListArgs),
    /// List the services and endpoints of the catalog
    CatalogList,
}

/// Arguments of `user-create`.
#[derive(Debug, Clone, Args)]
pub struct UserCreateArgs {
    /// New user name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Password of the new user
    // Its own id: `password` is the global --os-password's, which would take this value.
    #[arg(long = "password", id = "new_password", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Default project (name or id): the project its tokens are scoped to by default
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
}

/// Arguments of `role-add` and `role-remove`.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// Project (name or id)
    #[arg(long, value_name = "PROJECT")]
    pub project: String,
    /// User (name or id)
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Role: admin, member or reader (name or id)
    #[arg(value_name = "ROLE")]
    pub role: String,
}

/// Arguments of `role-assignment-list`.
#[derive(Debug, Clone, Args)]
pub struct AssignmentListArgs {
    /// Only this user's (name or id)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only in this project (name or id)
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Only this role (name or id)
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Show names instead of ids
    #[arg(long)]
    pub names: bool,
}

/// Columns of `project-list` and `user-list`.
const ID_NAME: &[&str] = &["ID", "Name"];
/// Columns of `role-assignment-list`, as python-openstackclient names them.
const ASSIGNMENT_COLUMNS: &[&str] = &[
    "Role",
    "User",
    "Group",
    "Project",
    "Domain",
    "System",
    "Inherited",
];
/// Columns of `catalog-list`.
const CATALOG_COLUMNS: &[&str] = &["Name", "Type", "Endpoints"];

fn api(e: crate::error::ClientError) -> CliError {
    CliError::from_api(e)
}

/// Runs one identity command and returns the text to print.
pub async fn run(
    client: &Client,
    command: IdentityCommand,
    format: Format,
    columns: &[String],
) -> Result<String, CliError> {
    let one = |record: Record| output::render_one(&record, format, columns).map_err(CliError::from);
    let many = |records: Vec<Record>, cols: &[&str]| {
        output::render_many(&records, cols, cols, format, columns).map_err(CliError::from)
    };
    match command {
        IdentityCommand::ProjectCreate {
            name,
            description,
            disable,
        } => {
            let p = client
                .create_project(&name, description.as_deref(), !disable)
                .await
                .map_err(api)?;
            one(project_record(&p))
        }
        IdentityCommand::ProjectList => {
            let projects = client.list_projects().await.map_err(api)?;
            many(
                projects.iter().map(|p| id_name(&p.id, &p.name)).collect(),
                ID_NAME,
            )
        }
        IdentityCommand::ProjectShow { project } => {
            let p = client.find_project(&project).await.map_err(api)?;
            one(project_record(&p))
        }
        IdentityCommand::ProjectDelete { projects } => {
            let mut failures = Vec::new();
            for name in &projects {
                let result = match client.find_project(name).await {
                    Ok(p) => client.delete_project(&p.id).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failures.push(api(e).context(format!("deleting project {name}")));
                }
            }
            done(failures)
        }
        IdentityCommand::UserCreate(args) => {
            let default_project_id = match &args.project {
                Some(p) => Some(client.find_project(p).await.map_err(api)?.id),
                None => None,
            };
            let user = client
                .create_user(&NewUser {
                    name: args.name.clone(),
                    password: args.password.clone(),
                    default_project_id,
                })
                .await
                .map_err(api)?;
            one(user_record(&user))
        }
        IdentityCommand::UserList => {
            let users = client.list_users().await.map_err(api)?;
            many(
                users.iter().map(|u| id_name(&u.id, &u.name)).collect(),
                ID_NAME,
            )
        }
        IdentityCommand::UserShow { user } => {
            let u = client.find_user(&user).await.map_err(api)?;
            one(user_record(&u))
        }
        IdentityCommand::UserDelete { users } => {
            let mut failures = Vec::new();
            for name in &users {
                let result = match client.find_user(name).await {
                    Ok(u) => client.delete_user(&u.id).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failures.push(api(e).context(format!("deleting user {name}")));
                }
            }
            done(failures)
        }
        IdentityCommand::RoleList => {
            let roles = client.list_roles().await.map_err(api)?;
            many(
                roles.iter().map(|r| id_name(&r.id, &r.name)).collect(),
                ID_NAME,
            )
        }
        IdentityCommand::RoleAdd(args) => {
            let (project, user, role) = resolve(client, &args).await?;
            client.add_role(&project, &user, &role).await.map_err(api)?;
            Ok(String::new())
        }
        IdentityCommand::RoleRemove(args) => {
            let (project, user, role) = resolve(client, &args).await?;
            client
                .remove_role(&project, &user, &role)
                .await
                .map_err(api)?;
            Ok(String::new())
        }
        IdentityCommand::RoleAssignmentList(args) => {
            let mut filter = AssignmentFilter {
                include_names: args.names,
                ..AssignmentFilter::default()
            };
            if let Some(u) = &args.user {
                filter.user_id = Some(client.find_user(u).await.map_err(api)?.id);
            }
            if let Some(p) = &args.project {
                filter.project_id = Some(client.find_project(p).await.map_err(api)?.id);
            }
            if let Some(r) = &args.role {
                filter.role_id = Some(client.find_role(r).await.map_err(api)?.id);
            }
            let assignments = client.role_assignments(&filter).await.map_err(api)?;
            many(
                assignments
                    .iter()
                    .map(|a| assignment_record(a, args.names))
                    .collect(),
                ASSIGNMENT_COLUMNS,
            )
        }
        IdentityCommand::CatalogList => {
            let catalog = client.catalog().await.map_err(api)?;
            many(
                catalog.iter().map(catalog_record).collect(),
                CATALOG_COLUMNS,
            )
        }
    }
}

async fn resolve(client: &Client, args: &RoleArgs) -> Result<(String, String, String), CliError> {
    let project = client.find_project(&args.project).await.map_err(api)?;
    let user = client.find_user(&args.user).await.map_err(api)?;
    let role = client.find_role(&args.role).await.map_err(api)?;
    Ok((project.id, user.id, role.id))
}

fn done(failures: Vec<CliError>) -> Result<String, CliError> {
    if failures.is_empty() {
        Ok(String::new())
    } else {
        Err(CliError::many(failures))
    }
}

fn id_name(id: &str, name: &str) -> Record {
    let mut r = Record::new();
    r.push("ID", id);
    r.push("Name", name);
    r
}

/// A project as `openstack project show` prints it.
pub fn project_record(p: &Project) -> Record {
    let mut r = Record::new();
    r.push("description", p.description.clone().unwrap_or_default());
    r.push("domain_id", p.domain_id.clone());
    r.push("enabled", p.enabled);
    r.push("id", p.id.clone());
    r.push("name", p.name.clone());
    r
}

/// A user as `openstack user show` prints it.
pub fn user_record(u: &User) -> Record {
    let mut r = Record::new();
    r.push("default_project_id", u.default_project_id.clone());
    r.push("domain_id", u.domain_id.clone());
    r.push("enabled", u.enabled);
    r.push("id", u.id.clone());
    r.push("name", u.name.clone());
    r
}

/// One assignment row: ids, or `name@Domain` with `--names` (python-openstackclient's
/// spelling).
fn assignment_record(a: &RoleAssignment, names: bool) -> Record {
    let label = |x: &crate::identity::Ref, qualified: bool| match (&x.name, names) {
        (Some(n), true) if qualified => format!("{n}@Default"),
        (Some(n), true) => n.clone(),
        _ => x.id.clone(),
    };
    let mut r = Record::new();
    r.push("Role", label(&a.role, false));
    r.push(
        "User",
        a.user.as_ref().map(|u| label(u, true)).unwrap_or_default(),
    );
    r.push("Group", "");
    r.push(
        "Project",
        a.scope
            .project
            .as_ref()
            .map(|p| label(p, true))
            .unwrap_or_default(),
    );
    r.push("Domain", "");
    r.push("System", "");
    r.push("Inherited", false);
    r
}

/// A catalog service: endpoints as `REGION\n  INTERFACE: URL` lines in tables, a
/// list of objects in JSON.
fn catalog_record(entry: &CatalogEntry) -> Record {
    let endpoints: Vec<Value> = entry
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "region": e.region.clone().or_else(|| e.region_id.clone()),
                "interface": e.interface,
                "url": e.url,
            })
        })
        .collect();
    let text = entry
        .endpoints
        .iter()
        .map(|e| {
            let region = e.region.as_deref().or(e.region_id.as_deref()).unwrap_or("");
            format!("{region}\n  {}: {}", e.interface, e.url)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut r = Record::new();
    r.push("Name", entry.name.clone().unwrap_or_default());
    r.push("Type", entry.service_type.clone());
    r.push_with_display("Endpoints", endpoints, text);
    r
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// The caller's --os-password and the parsed identity command.
    fn identity(args: &[&str]) -> (Option<String>, IdentityCommand) {
        let cli = Cli::try_parse_from(std::iter::once("osc").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Command::Identity(command) => (cli.auth.password, command),
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn user_create_password_is_not_taken_for_the_callers_os_password() {
        let (os_password, command) = identity(&[
            "user-create",
            "alice",
            "--password",
            "new-pw",
            "--project",
            "demo",
            "--os-password",
            "admin-pw",
        ]);
        assert_eq!(os_password.as_deref(), Some("admin-pw"));
        let IdentityCommand::UserCreate(args) = command else {
            panic!("expected user-create");
        };
        assert_eq!(args.password.as_deref(), Some("new-pw"));
        assert_eq!(args.project.as_deref(), Some("demo"));
    }

    #[test]
    fn role_commands_take_project_user_and_role() {
        let (_, command) = identity(&["role-add", "--project", "p", "--user", "u", "member"]);
        let IdentityCommand::RoleAdd(args) = command else {
            panic!("expected role-add");
        };
        assert_eq!(
            (
                args.project.as_str(),
                args.user.as_str(),
                args.role.as_str()
            ),
            ("p", "u", "member")
        );
        let (_, command) = identity(&["role-assignment-list", "--user", "u", "--names"]);
        let IdentityCommand::RoleAssignmentList(args) = command else {
            panic!("expected role-assignment-list");
        };
        assert!(args.names && args.user.as_deref() == Some("u") && args.project.is_none());
        assert!(Cli::try_parse_from(["osc", "role-add", "--user", "u", "member"]).is_err());
        assert!(Cli::try_parse_from(["osc", "project-delete"]).is_err());
    }

    #[test]
    fn assignments_show_names_qualified_by_domain_with_names() {
        let a = RoleAssignment {
            role: crate::identity::Ref {
                id: "r1".into(),
                name: Some("member".into()),
            },
            user: Some(crate::identity::Ref {
                id: "u1".into(),
                name: Some("alice".into()),
            }),
            scope: crate::identity::Scope {
                project: Some(crate::identity::Ref {
                    id: "p1".into(),
                    name: Some("demo".into()),
                }),
            },
        };
        let named = assignment_record(&a, true);
        assert_eq!(named.get("User").unwrap().text(), "alice@Default");
        assert_eq!(named.get("Project").unwrap().text(), "demo@Default");
        assert_eq!(named.get("Role").unwrap().text(), "member");
        let ids = assignment_record(&a, false);
        assert_eq!(ids.get("User").unwrap().text(), "u1");
        assert_eq!(ids.get("Role").unwrap().text(), "r1");
    }
}
