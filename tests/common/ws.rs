//! A bare signaling WebSocket for tests that read the protocol themselves.

use conclave_signaling::{ServerMessage, decode_server};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws` and sends `join` for `room` with `token`.
pub async fn join(addr: SocketAddr, room: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let msg = serde_json::json!({"v": 1, "type": "join", "room": room, "token": token});
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    ws
}

/// Next message matching `pred`, skipping others; `None` if the socket closed or time ran out.
pub async fn wait_for(
    ws: &mut Ws,
    secs: u64,
    mut pred: impl FnMut(&ServerMessage) -> bool,
) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match frame {
            Ok(Message::Text(t)) => {
                let m = decode_server(t.as_str()).unwrap();
                if pred(&m) {
                    return Some(m);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            _ => {}
        }
    }
}
