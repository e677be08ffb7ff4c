//! The OpenAPI document of the whole HTTP surface, generated from the
//! handlers' annotations, served at `/admin/api/openapi.json`.

use actix_web::HttpResponse;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxkf-manager",
        description = "WeCom customer-service callback manager: the puppet-facing and callback routes are compatible with the Node.js wxkf-manager; /admin/api is ours (bearer ADMIN_TOKEN)."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::puppets::register,
        super::puppets::deregister,
        super::puppets::info,
        super::tokens::get_token,
        super::tokens::proxy,
        super::callback::verify_url,
        super::callback::encrypted,
        super::callback::decrypted,
        super::overview::overview,
        super::admin::list_puppets,
        super::admin::show_puppet,
        super::admin::delete_puppet,
        super::admin::move_puppet,
        super::admin::list_corps,
        super::admin::rotate_credentials,
        super::admin::list_deliveries,
        super::admin::redrive_one,
        super::admin::redrive_kf,
        super::admin::delete_one,
        super::admin::dashboard,
        super::wechat::verify_url,
        super::wechat::push,
        super::admin_channels::put_app,
        super::admin_channels::list_apps,
        super::admin_channels::show_app,
        super::admin_channels::delete_app,
        super::admin_channels::create_subscription,
        super::admin_channels::list_subscriptions,
        super::admin_channels::show_subscription,
        super::admin_channels::change_subscription,
        super::admin_channels::delete_subscription,
        super::admin_channels::show_corp,
        super::admin_channels::remove_credentials,
        super::admin_channels::issue_key,
        super::admin_channels::list_keys,
        super::admin_channels::revoke_key,
        super::wechat_api::token,
        super::wechat_api::proxy,
        super::suite::verify_url,
        super::suite::verify_data_url,
        super::suite::verify_url_of_corp,
        super::suite::command,
        super::suite::data,
        super::suite::data_of_corp,
        super::suite_api::corps,
        super::suite_api::token,
        super::suite_api::proxy,
        super::admin_providers::put_suite,
        super::admin_providers::list_suites,
        super::admin_providers::show_suite,
        super::admin_providers::delete_suite,
        super::admin_providers::list_corps,
        super::admin_providers::issue_key,
        super::admin_providers::list_keys,
        super::admin_providers::revoke_key,
        super::component::events,
        super::component::messages,
        super::component_api::token,
        super::component_api::proxy,
        super::component_api::authorizer_token,
        super::component_api::authorizer_proxy,
        super::admin_components::put_component,
        super::admin_components::list_components,
        super::admin_components::show_component,
        super::admin_components::delete_component,
        super::admin_components::list_authorizers,
        super::admin_components::sync,
        super::admin_components::issue_key,
        super::admin_components::list_keys,
        super::admin_components::revoke_key,
    ),
    components(schemas(crate::store::DeliveryStatus))
)]
pub struct ApiDoc;

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
