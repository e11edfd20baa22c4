//! Users: registration, login, tokens, profile, roles and the address book.

use crate::helpers::*;
use emporium_kernel::auth::Role;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn address(line1: &str) -> Value {
    json!({"label": "home", "line1": line1, "city": "Berlin", "postal_code": "10115", "country": "de", "lat": 52.53, "lon": 13.38})
}

backend_tests! {
    async fn register_login_profile_and_addresses(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.register("  Ann@Example.COM ", "correct horse battery").await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["user"]["email"], "ann@example.com", "e-mail normalised");
        assert_eq!(body["user"]["roles"], json!(["customer"]));
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_i64().unwrap() > 0);

        let res = app.login("ann@example.com", "correct horse battery").await;
        assert_eq!(res.status(), StatusCode::OK);
        let login = session(res.json().await.unwrap());
        assert_eq!(login.id, body["user"]["id"].as_str().unwrap());

        let profile: Value = app.get("/api/v1/users/profile", Some(&login.access_token)).await.json().await.unwrap();
        assert_eq!(profile["email"], "ann@example.com");
        assert_eq!(profile["name"], "Test User");
        assert!(profile["created_at"].is_string());

        let res = app.post("/api/v1/users/addresses", Some(&login.access_token), address("Invalidenstr. 1")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let first: Value = res.json().await.unwrap();
        assert_eq!(first["is_default"], true, "the first address is the default");
        assert_eq!(first["country"], "DE");
        assert_eq!(first["lat"], 52.53);

        let mut second = address("Torstr. 2");
        second["is_default"] = json!(true);
        let second: Value = app.post("/api/v1/users/addresses", Some(&login.access_token), second).await.json().await.unwrap();
        let list: Value = app.get("/api/v1/users/addresses", Some(&login.access_token)).await.json().await.unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert!(list["next_cursor"].is_null());
        let defaults: Vec<&Value> = items.iter().filter(|a| a["is_default"] == true).collect();
        assert_eq!(defaults.len(), 1, "exactly one default");
        assert_eq!(defaults[0]["id"], second["id"]);

        let mut changed = address("Torstr. 3");
        changed["is_default"] = json!(true);
        let path = format!("/api/v1/users/addresses/{}", second["id"].as_str().unwrap());
        let res = app.request(Method::PUT, &path, Some(&login.access_token), Some(changed)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["line1"], "Torstr. 3");

        // Deleting the default promotes the remaining address.
        let res = app.request(Method::DELETE, &path, Some(&login.access_token), None).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let list: Value = app.get("/api/v1/users/addresses", Some(&login.access_token)).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["id"], first["id"]);
        assert_eq!(list["items"][0]["is_default"], true);
        let res = app.request(Method::DELETE, &path, Some(&login.access_token), None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }

    async fn duplicate_email_is_a_conflict(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.register("bob@example.com", "correct horse battery").await.status(), StatusCode::CREATED);
        let res = app.register("BOB@example.com", "another password").await;
        let problem = assert_problem(res, StatusCode::CONFLICT, "already-exists").await;
        assert!(problem["detail"].as_str().unwrap().contains("e-mail"));
    }

    async fn bad_credentials_are_401(backend: Backend) {
        let app = spawn_app(backend).await;
        app.register("carol@example.com", "correct horse battery").await;
        let res = app.login("carol@example.com", "wrong password!").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        let res = app.login("nobody@example.com", "correct horse battery").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        let res = app.login("not an email", "whatever").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
    }

    // Guessing one account's password from many addresses: after 10 failures in 15 minutes the
    // e-mail address is locked, the right password included; unknown addresses lock alike (the
    // answer tells nobody which accounts exist); other accounts are not touched.
    async fn repeated_failed_sign_ins_lock_the_address_for_a_while(backend: Backend) {
        let app = spawn_app(backend).await;
        app.register("dora@example.com", "correct horse battery").await;
        app.register("eve@example.com", "correct horse battery").await;
        for attempt in 0..10 {
            let res = app.login("dora@example.com", &format!("guess number {attempt}")).await;
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
            let res = app.login("nobody@example.com", &format!("guess number {attempt}")).await;
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        }
        for email in ["dora@example.com", "DORA@example.com ", "nobody@example.com"] {
            let res = app.login(email, "correct horse battery").await;
            let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=900).contains(&retry_after), "{retry_after}");
            assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        }
        assert_eq!(app.login("eve@example.com", "correct horse battery").await.status(), StatusCode::OK);

        // Fewer failures than that are forgotten by a successful sign-in.
        for _ in 0..9 {
            app.login("eve@example.com", "not her password").await;
        }
        assert_eq!(app.login("eve@example.com", "correct horse battery").await.status(), StatusCode::OK);
        for _ in 0..9 {
            app.login("eve@example.com", "not her password").await;
        }
        assert_eq!(app.login("eve@example.com", "correct horse battery").await.status(), StatusCode::OK);
    }

    // A password must not be the account's e-mail address, nor hold control characters; a name
    // must have something visible.
    async fn weak_passwords_and_invisible_names_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.post("/api/v1/users/register", None,
            json!({"email": "frank.lee@example.com", "password": "Frank.Lee@example.com", "name": "Frank"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["password"]);
        let res = app.post("/api/v1/users/register", None,
            json!({"email": "frank.lee@example.com", "password": "correct\u{0}horse", "name": "\u{200b}\u{200b}"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["password", "name"]);
        let frank = app.signed_in_customer().await;
        let res = app.request(Method::PATCH, "/api/v1/users/profile", Some(&frank.access_token),
            Some(json!({"password": frank.email.to_uppercase(), "current_password": "correct horse battery"}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["password"]);
    }

    async fn imported_customers_exist_but_cannot_sign_in_and_imports_are_all_or_nothing(backend: Backend) {
        use emporium_users::model::{Email, PersonName};
        let app = spawn_app(backend).await;
        let person = |email: &str| (Email::parse(email).unwrap(), PersonName::parse("Imported Shopper").unwrap());
        let registered = async || app.event_types("users").await.iter().filter(|t| t.as_str() == "UserRegistered").count();
        let before = registered().await;
        let imported = app.users.import_customers(vec![person("ann@example.com"), person("ben@example.com")]).await.unwrap();
        assert_eq!(imported.len(), 2);
        let ann = app.users.user_by_email(&Email::parse("ann@example.com").unwrap()).await.unwrap().expect("imported");
        assert_eq!(ann.id, imported[0].id);
        assert_eq!(ann.roles, vec![emporium_kernel::auth::Role::Customer]);
        // No password of their own: nothing signs in as them, not even an empty-looking guess.
        for password in ["correct horse battery", "password password"] {
            assert_problem(app.login("ann@example.com", password).await, StatusCode::UNAUTHORIZED, "invalid-credentials").await;
        }
        // One taken address refuses the whole batch.
        let clash = app.users.import_customers(vec![person("cat@example.com"), person("BEN@example.com")]).await;
        assert!(matches!(clash, Err(emporium_users::service::Error::EmailTaken)), "{clash:?}");
        assert!(app.users.user_by_email(&Email::parse("cat@example.com").unwrap()).await.unwrap().is_none());
        assert_eq!(registered().await, before + 2, "one event per imported account, none for the refused batch");
    }

    async fn protected_endpoints_need_a_valid_token(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/api/v1/users/profile", None).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let res = app.get("/api/v1/users/profile", Some("not.a.jwt")).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.client.get(app.url("/api/v1/users/addresses")).header("authorization", "Basic abc").send().await.unwrap();
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    }

    async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let first = app.signed_in_customer().await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": first.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let second = session(res.json().await.unwrap());
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(app.get("/api/v1/users/profile", Some(&second.access_token)).await.status(), StatusCode::OK);

        // Replaying the rotated token is refused and ends the session: the newest token dies too.
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": first.refresh_token})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": second.refresh_token})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;

        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": "made-up"})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["refresh_token"]);
    }

    async fn logout_revokes_the_refresh_token(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signed_in_customer().await;
        let other_device = session(app.login(&user.email, "correct horse battery").await.json().await.unwrap());
        let res = app.post("/api/v1/users/logout", None, json!({"refresh_token": user.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": user.refresh_token})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        // Other sessions are untouched; logging out twice is harmless.
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": other_device.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.post("/api/v1/users/logout", None, json!({"refresh_token": user.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }

    async fn profile_updates(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signed_in_customer().await;
        let other = app.signed_in_customer().await;
        let token = Some(user.access_token.as_str());

        let res = app.request(Method::PATCH, "/api/v1/users/profile", token, Some(json!({"name": "  Renamed  "}))).await;
        assert_eq!(res.json::<Value>().await.unwrap()["name"], "Renamed");

        let res = app.request(Method::PATCH, "/api/v1/users/profile", token, Some(json!({"email": other.email}))).await;
        assert_problem(res, StatusCode::CONFLICT, "already-exists").await;

        let res = app.request(Method::PATCH, "/api/v1/users/profile", token, Some(json!({"password": "a new password"}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["current_password"]);

        let res = app.request(Method::PATCH, "/api/v1/users/profile", token,
            Some(json!({"password": "a new password", "current_password": "wrong one"}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["current_password"]);

        let res = app.request(Method::PATCH, "/api/v1/users/profile", token,
            Some(json!({"password": "a new password", "current_password": "correct horse battery"}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.login(&user.email, "correct horse battery").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login(&user.email, "a new password").await.status(), StatusCode::OK);
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": user.refresh_token})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    }

    async fn address_validation_and_isolation(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signed_in_customer().await;
        let token = Some(user.access_token.as_str());

        let res = app.post("/api/v1/users/addresses", token, json!({"lat": 91.0, "country": "Germany"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["line1", "city", "postal_code", "country", "lat"]);

        let mut half = address("x");
        half.as_object_mut().unwrap().remove("lon");
        let problem = assert_problem(app.post("/api/v1/users/addresses", token, half).await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["lon"]);

        let res = app.post("/api/v1/users/addresses", token, json!({"line1": "a", "city": "b", "postal_code": "1", "country": "DE", "lat": "north"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["lat"]);

        let created: Value = app.post("/api/v1/users/addresses", token, address("Mine 1")).await.json().await.unwrap();
        let path = format!("/api/v1/users/addresses/{}", created["id"].as_str().unwrap());
        let mut undefault = address("Mine 1");
        undefault["is_default"] = json!(false);
        let res = app.request(Method::PUT, &path, token, Some(undefault)).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["is_default"]);

        // Another user can neither see, change nor delete it.
        let intruder = app.signed_in_customer().await;
        let res = app.request(Method::PUT, &path, Some(&intruder.access_token), Some(address("Theirs"))).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.request(Method::DELETE, &path, Some(&intruder.access_token), None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let list: Value = app.get("/api/v1/users/addresses", Some(&intruder.access_token)).await.json().await.unwrap();
        assert!(list["items"].as_array().unwrap().is_empty());
        let res = app.request(Method::DELETE, "/api/v1/users/addresses/not-an-id", token, None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }

    // Logout, a new password, a revoked role and a disabled account end access tokens at once,
    // not when they expire.
    async fn ended_sessions_lose_their_access_tokens_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let profile = |token: String| {
            let app = &app;
            async move { app.get("/api/v1/users/profile", Some(&token)).await }
        };

        // Logout: this session's token at once; another device refreshes into a working one.
        let ann = app.signed_in_customer().await;
        let ann_phone = session(app.login(&ann.email, "correct horse battery").await.json().await.unwrap());
        assert_eq!(profile(ann.access_token.clone()).await.status(), StatusCode::OK);
        let res = app.post("/api/v1/users/logout", None, json!({"refresh_token": ann.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_problem(profile(ann.access_token.clone()).await, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": ann_phone.refresh_token})).await;
        let phone = session(res.json().await.unwrap());
        assert_eq!(profile(phone.access_token).await.status(), StatusCode::OK);

        // A new password: every earlier token ends; the answer carries a new session.
        let bob = app.signed_in_customer().await;
        let res = app.request(Method::PATCH, "/api/v1/users/profile", Some(&bob.access_token), Some(json!({"name": "Bob"}))).await;
        assert_eq!(res.json::<Value>().await.unwrap().get("session"), None, "a rename keeps the session");
        let res = app.request(Method::PATCH, "/api/v1/users/profile", Some(&bob.access_token),
            Some(json!({"password": "a new password", "current_password": "correct horse battery"}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let changed: Value = res.json().await.unwrap();
        assert_eq!(changed["name"], "Bob");
        assert_problem(profile(bob.access_token.clone()).await, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let fresh = changed["session"]["access_token"].as_str().unwrap().to_owned();
        assert_eq!(profile(fresh).await.status(), StatusCode::OK);
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": changed["session"]["refresh_token"]})).await;
        assert_eq!(res.status(), StatusCode::OK);

        // A revoked role: the seller's token cannot create a product any more.
        let seller = app.signed_in_with_roles(&[Role::Customer, Role::Seller]).await;
        let res = app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": "Lamps"})).await;
        let category = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let product = |sku: &str| json!({"sku": sku, "title": "Lamp", "brand": "Acme", "category_id": category,
            "price": {"amount": 1_000, "currency": "USD"}});
        let res = app.post("/api/v1/products", Some(&seller.access_token), product("lamp-1")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let path = format!("/api/v1/admin/users/{}/roles", seller.id);
        let res = app.request(Method::PUT, &path, Some(&admin.access_token), Some(json!({"roles": ["customer"]}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.post("/api/v1/products", Some(&seller.access_token), product("lamp-2")).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": seller.refresh_token})).await;
        let customer = session(res.json().await.unwrap());
        let res = app.post("/api/v1/products", Some(&customer.access_token), product("lamp-2")).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

        // A disabled account: no token, no sign-in, no refresh, until it is enabled again.
        let cleo = app.signed_in_customer().await;
        let disable = format!("/api/v1/admin/users/{}/disable", cleo.id);
        assert_problem(app.post(&disable, Some(&cleo.access_token), json!({})).await, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post(&disable, Some(&admin.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_problem(profile(cleo.access_token.clone()).await, StatusCode::UNAUTHORIZED, "invalid-token").await;
        assert_problem(app.login(&cleo.email, "correct horse battery").await, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": cleo.refresh_token})).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let own = format!("/api/v1/admin/users/{}/disable", admin.id);
        assert_problem(app.post(&own, Some(&admin.access_token), json!({})).await, StatusCode::CONFLICT, "conflict").await;
        let missing = format!("/api/v1/admin/users/{}/disable", uuid::Uuid::now_v7());
        assert_problem(app.post(&missing, Some(&admin.access_token), json!({})).await, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.post(&format!("/api/v1/admin/users/{}/enable", cleo.id), Some(&admin.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let again = session(app.login(&cleo.email, "correct horse battery").await.json().await.unwrap());
        assert_eq!(profile(again.access_token).await.status(), StatusCode::OK);
    }

    async fn admins_grant_roles(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let user = app.signed_in_customer().await;
        let path = format!("/api/v1/admin/users/{}/roles", user.id);

        let res = app.request(Method::PUT, &path, Some(&user.access_token), Some(json!({"roles": ["admin"]}))).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.request(Method::PUT, &path, None, Some(json!({"roles": ["admin"]}))).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;

        let res = app.request(Method::PUT, &path, Some(&admin.access_token), Some(json!({"roles": ["wizard"]}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["roles"]);
        let res = app.request(Method::PUT, &path, Some(&admin.access_token), Some(json!({"roles": ["service"]}))).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        let missing = format!("/api/v1/admin/users/{}/roles", uuid::Uuid::now_v7());
        let res = app.request(Method::PUT, &missing, Some(&admin.access_token), Some(json!({"roles": ["seller"]}))).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;

        let res = app.request(Method::PUT, &path, Some(&admin.access_token), Some(json!({"roles": ["seller", "customer", "seller"]}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["roles"], json!(["customer", "seller"]));
        // The grant reaches the user's tokens at the next refresh.
        let refreshed: Value = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": user.refresh_token})).await.json().await.unwrap();
        assert_eq!(refreshed["user"]["roles"], json!(["customer", "seller"]));
    }

    async fn create_admin_promotes_an_existing_account(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signed_in_customer().await;
        let registration = emporium_users::service::Registration {
            email: emporium_users::model::Email::parse(&user.email).unwrap(),
            password: emporium_users::model::Password::parse("ignored password").unwrap(),
            name: emporium_users::model::PersonName::parse("Ignored").unwrap(),
        };
        let (admin, created) = app.users.ensure_admin(registration).await.unwrap();
        assert!(!created);
        assert!(admin.roles.contains(&emporium_kernel::auth::Role::Admin));
        assert_eq!(app.login(&user.email, "correct horse battery").await.status(), StatusCode::OK, "password unchanged");
    }

    async fn registration_emits_user_registered_with_the_request_id(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.register("dora@example.com", "correct horse battery").await;
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        let events = emporium_kernel::events::outbox_events(app.users_db(), 0, 100).await.unwrap();
        let registered: Vec<_> = events.iter().filter(|e| e.event_type == "UserRegistered").collect();
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].aggregate_id, body["user"]["id"].as_str().unwrap());
        assert_eq!(registered[0].payload["email"], "dora@example.com");
        assert_eq!(registered[0].trace_id.as_deref(), Some(request_id.as_str()));
        // A failed registration writes no event.
        app.register("dora@example.com", "correct horse battery").await;
        let events = emporium_kernel::events::outbox_events(app.users_db(), 0, 100).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.event_type == "UserRegistered").count(), 1);
    }
}
