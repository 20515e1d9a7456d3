//! The one port answers gRPC health, reflection and HTTP `/health`.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    app::{Backend, spawn_app_with},
    rest::http_get,
};

#[tokio::test]
async fn every_service_reports_serving_and_health_json_answers() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let mut health = HealthClient::new(app.channel.clone());
        for service in [
            "",
            "commerce.v1.CartService",
            "commerce.v1.OrderService",
            "commerce.v1.SagaAdmin",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{backend:?} {service}");
        }
        let body = http_get(app.port, "/health").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("\"database\""), "{body}");
    }
}

#[tokio::test]
async fn unknown_routes_answer_json_404_with_a_request_id() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let response = http_get(app.port, "/no/such/route").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id:"),
        "{response}"
    );
    assert!(response.contains("\"code\":5"), "{response}");
}
