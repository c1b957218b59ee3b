//! The Keystone v3 calls behind `osc project-*`, `user-*`, `role-*` and `catalog-list`:
//! projects, users, role assignments and the catalog, on the identity API the client
//! authenticated against.
//!
//! Commands take names or ids, as python-openstackclient does: `find_*` first asks for
//! the id, then lists with `?name=`.

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::CatalogEntry;
use crate::client::{check_status, decode, Client, AUTH_TOKEN_HEADER};
use crate::error::ClientError;

/// A project (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub id: String,
    /// Name, unique in its domain.
    pub name: String,
    /// Domain id (always `default` on Berth).
    #[serde(default)]
    pub domain_id: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether tokens scoped to it work.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: String,
    /// Name, unique in its domain.
    pub name: String,
    /// Domain id.
    #[serde(default)]
    pub domain_id: Option<String>,
    /// Whether the user may authenticate.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The project a token is scoped to when the request names none.
    #[serde(default)]
    pub default_project_id: Option<String>,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Id.
    pub id: String,
    /// Name, e.g. `member`.
    pub name: String,
}

/// An `{id, name?}` reference inside a role assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Id.
    pub id: String,
    /// Name (with `include_names`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The scope of a role assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The project, for project-scoped assignments (the only kind on Berth).
    #[serde(default)]
    pub project: Option<Ref>,
}

/// One role assignment: `user` holds `role` on `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// The role.
    pub role: Ref,
    /// The user (absent for group assignments, which Berth does not have).
    #[serde(default)]
    pub user: Option<Ref>,
    /// Where the role is held.
    #[serde(default)]
    pub scope: Scope,
}

/// Filters of [`Client::role_assignments`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentFilter {
    /// Only this user's (an id).
    pub user_id: Option<String>,
    /// Only on this project (an id).
    pub project_id: Option<String>,
    /// Only this role (an id).
    pub role_id: Option<String>,
    /// Ask for names besides ids.
    pub include_names: bool,
}

/// What to create with [`Client::create_user`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUser {
    /// Name.
    pub name: String,
    /// Password (without one nobody can authenticate as the user).
    pub password: Option<String>,
    /// Default project id.
    pub default_project_id: Option<String>,
}

fn yes() -> bool {
    true
}

impl Client {
    /// `GET /auth/catalog`: the services and endpoints the token may use.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            catalog: Vec<CatalogEntry>,
        }
        let body: Body = self.identity_get(&["auth", "catalog"], &[]).await?;
        Ok(body.catalog)
    }

    /// `POST /projects`.
    pub async fn create_project(
        &self,
        name: &str,
        description: Option<&str>,
        enabled: bool,
    ) -> Result<Project, ClientError> {
        let mut project = json!({"name": name, "domain_id": "default", "enabled": enabled});
        if let Some(d) = description {
            project["description"] = json!(d);
        }
        #[derive(Deserialize)]
        struct Body {
            project: Project,
        }
        let body: Body = self
            .identity_send(
                Method::POST,
                &["projects"],
                Some(json!({"project": project})),
            )
            .await?;
        Ok(body.project)
    }

    /// `GET /projects`.
    pub async fn list_projects(&self) -> Result<Vec<Project>, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            projects: Vec<Project>,
        }
        Ok(self
            .identity_get::<Body>(&["projects"], &[])
            .await?
            .projects)
    }

    /// The project with this id or name.
    pub async fn find_project(&self, name_or_id: &str) -> Result<Project, ClientError> {
        #[derive(Deserialize)]
        struct One {
            project: Project,
        }
        #[derive(Deserialize)]
        struct Many {
            projects: Vec<Project>,
        }
        self.find(
            "project",
            name_or_id,
            |o: One| o.project,
            |m: Many| m.projects,
            "projects",
        )
        .await
    }

    /// `DELETE /projects/{id}`.
    pub async fn delete_project(&self, id: &str) -> Result<(), ClientError> {
        self.identity_send::<Value>(Method::DELETE, &["projects", id], None)
            .await
            .map(drop)
    }

    /// `POST /users`.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, ClientError> {
        let mut user = json!({"name": new.name, "domain_id": "default", "enabled": true});
        if let Some(p) = &new.password {
            user["password"] = json!(p);
        }
        if let Some(p) = &new.default_project_id {
            user["default_project_id"] = json!(p);
        }
        #[derive(Deserialize)]
        struct Body {
            user: User,
        }
        let body: Body = self
            .identity_send(Method::POST, &["users"], Some(json!({"user": user})))
            .await?;
        Ok(body.user)
    }

    /// `GET /users`.
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            users: Vec<User>,
        }
        Ok(self.identity_get::<Body>(&["users"], &[]).await?.users)
    }

    /// The user with this id or name.
    pub async fn find_user(&self, name_or_id: &str) -> Result<User, ClientError> {
        #[derive(Deserialize)]
        struct One {
            user: User,
        }
        #[derive(Deserialize)]
        struct Many {
            users: Vec<User>,
        }
        self.find(
            "user",
            name_or_id,
            |o: One| o.user,
            |m: Many| m.users,
            "users",
        )
        .await
    }

    /// `DELETE /users/{id}`.
    pub async fn delete_user(&self, id: &str) -> Result<(), ClientError> {
        self.identity_send::<Value>(Method::DELETE, &["users", id], None)
            .await
            .map(drop)
    }

    /// `GET /roles`.
    pub async fn list_roles(&self) -> Result<Vec<Role>, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            roles: Vec<Role>,
        }
        Ok(self.identity_get::<Body>(&["roles"], &[]).await?.roles)
    }

    /// The role with this id or name.
    pub async fn find_role(&self, name_or_id: &str) -> Result<Role, ClientError> {
        #[derive(Deserialize)]
        struct One {
            role: Role,
        }
        #[derive(Deserialize)]
        struct Many {
            roles: Vec<Role>,
        }
        self.find(
            "role",
            name_or_id,
            |o: One| o.role,
            |m: Many| m.roles,
            "roles",
        )
        .await
    }

    /// `PUT /projects/{p}/users/{u}/roles/{r}`: grants a role (ids).
    pub async fn add_role(&self, project: &str, user: &str, role: &str) -> Result<(), ClientError> {
        self.identity_send::<Value>(
            Method::PUT,
            &["projects", project, "users", user, "roles", role],
            None,
        )
        .await
        .map(drop)
    }

    /// `DELETE /projects/{p}/users/{u}/roles/{r}`: revokes a role (ids).
    pub async fn remove_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(), ClientError> {
        self.identity_send::<Value>(
            Method::DELETE,
            &["projects", project, "users", user, "roles", role],
            None,
        )
        .await
        .map(drop)
    }

    /// `GET /role_assignments` with the given filters.
    pub async fn role_assignments(
        &self,
        filter: &AssignmentFilter,
    ) -> Result<Vec<RoleAssignment>, ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(u) = &filter.user_id {
            query.push(("user.id", u));
        }
        if let Some(p) = &filter.project_id {
            query.push(("scope.project.id", p));
        }
        if let Some(r) = &filter.role_id {
            query.push(("role.id", r));
        }
        if filter.include_names {
            query.push(("include_names", "True"));
        }
        #[derive(Deserialize)]
        struct Body {
            role_assignments: Vec<RoleAssignment>,
        }
        Ok(self
            .identity_get::<Body>(&["role_assignments"], &query)
            .await?
            .role_assignments)
    }

    /// Finds by id, then by name (`?name=`), as python-openstackclient does.
    async fn find<O, M, T>(
        &self,
        kind: &str,
        name_or_id: &str,
        one: impl FnOnce(O) -> T,
        many: impl FnOnce(M) -> Vec<T>,
        collection: &str,
    ) -> Result<T, ClientError>
    where
        O: DeserializeOwned,
        M: DeserializeOwned,
    {
        match self.identity_get::<O>(&[collection, name_or_id], &[]).await {
            Ok(found) => return Ok(one(found)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut found = many(
            self.identity_get::<M>(&[collection], &[("name", name_or_id)])
                .await?,
        );
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ClientError::Api {
                status: 404,
                body: crate::error::ApiErrorBody {
                    title: format!("No {kind} with a name or ID of '{name_or_id}' exists."),
                    ..Default::default()
                },
            }),
            n => Err(ClientError::Api {
                status: 409,
                body: crate::error::ApiErrorBody {
                    title: format!("{n} {kind}s are called '{name_or_id}'; give the ID instead."),
                    ..Default::default()
                },
            }),
        }
    }

    fn identity_url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self
            .identity
            .clone()
            .ok_or_else(|| ClientError::InvalidUrl {
                url: String::new(),
                reason:
                    "identity commands need the identity service: authenticate with a password \
                     (OS_AUTH_URL, OS_USERNAME, ...) rather than a token and an endpoint"
                        .into(),
            })?;
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    async fn identity_get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let url = self.identity_url(segments)?;
        let response = self
            .http
            .get(url.clone())
            .query(query)
            .header(AUTH_TOKEN_HEADER, &self.token.id)
            .send()
            .await
            .map_err(|e| ClientError::unreachable(&url, &e))?;
        decode(check_status(response).await?, &url).await
    }

    /// Sends a request; a 204 answer decodes as JSON `null`.
    async fn identity_send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let url = self.identity_url(segments)?;
        let mut request = self
            .http
            .request(method, url.clone())
            .header(AUTH_TOKEN_HEADER, &self.token.id);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::unreachable(&url, &e))?;
        let response = check_status(response).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null)
                .map_err(|e| ClientError::invalid_response(&url, e.to_string()));
        }
        decode(response, &url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_urls_are_built_under_the_v3_base_with_encoded_segments() {
        let mut client = Client::with_token("http://h/v1", "t").unwrap();
        assert!(client.identity_url(&["projects"]).is_err());
        client.identity = Some(Url::parse("http://h/identity/v3").unwrap());
        assert_eq!(
            client.identity_url(&["projects", "a/b"]).unwrap().as_str(),
            "http://h/identity/v3/projects/a%2Fb"
        );
    }

    #[test]
    fn assignments_parse_with_and_without_names() {
        let a: RoleAssignment = serde_json::from_value(json!({
            "role": {"id": "r1", "name": "member"},
            "user": {"id": "u1", "name": "alice", "domain": {"id": "default"}},
            "scope": {"project": {"id": "p1", "name": "demo"}},
            "links": {}
        }))
        .unwrap();
        assert_eq!(a.role.name.as_deref(), Some("member"));
        assert_eq!(a.scope.project.unwrap().name.as_deref(), Some("demo"));
        let b: RoleAssignment = serde_json::from_value(json!({
            "role": {"id": "r1"}, "user": {"id": "u1"}, "scope": {"project": {"id": "p1"}}
        }))
        .unwrap();
        assert_eq!(b.user.unwrap().name, None);
    }
}
