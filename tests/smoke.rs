mod support;

use h2pool::Pool;
use support::{body_bytes, ServerConfig, TestServer};
use tower::ServiceExt;

#[tokio::test]
async fn a_get_through_the_pool_returns_the_body() {
    let server = TestServer::start(ServerConfig::default()).await;
    let pool = Pool::new();
    let request = http::Request::get(server.url("/"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = pool.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(body_bytes(response).await.unwrap(), "ok");
}
