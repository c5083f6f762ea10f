//! OpenAI-compatible endpoints: `GET /v1/models` lists agents and
//! `POST /v1/chat/completions` talks to one (model = agent name), so the
//! official `openai` client works unchanged. Tool calls run inside IronClaw;
//! the client sees the answer. Each request is a conversation of its own (a
//! session is recorded for history and usage).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ironclaw_agent::TurnEvent;
use ironclaw_api as api;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::{ApiError, Json};
use crate::AppState;

#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", tag = "openai",
    summary = "Agents, OpenAI-style",
    responses((status = 200, description = "success", body = api::ModelList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn models(State(st): State<AppState>) -> axum::Json<api::ModelList> {
    let data = st
        .chat
        .agents()
        .iter()
        .map(|a| api::Model {
            id: a.name.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "ironclaw".into(),
        })
        .collect();
    axum::Json(api::ModelList {
        object: "list".into(),
        data,
    })
}

fn text_of(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")),
        other => Err(ApiError::BadRequest(format!(
            "message content must be a string or an array of parts, got {other}"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "chatCompletions", tag = "openai",
    summary = "OpenAI-compatible chat completions (model = agent name; stream or not)",
    request_body = api::ChatCompletion,
    responses((status = 200, description = "an OpenAI chat.completion, or its chunks as Server-Sent Events with stream"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn completions(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<api::ChatCompletion>,
) -> Result<Response, ApiError> {
    st.chat.agent(&req.model)?;
    st.chat.check_spend(&caller.user)?;
    let Some((last, earlier)) = req.messages.split_last() else {
        return Err(ApiError::BadRequest("messages must not be empty".into()));
    };
    if last.role != "user" {
        return Err(ApiError::BadRequest(format!(
            "the last message must have role \"user\", not {:?}",
            last.role
        )));
    }
    let text = text_of(&last.content)?;
    crate::chat::check_message(&text)?;
    let session = st.chat.new_session(&caller.user, Some(&req.model))?;
    // Earlier turns the client sends become the session's history.
    let mut prior = Vec::new();
    for m in earlier {
        let t = text_of(&m.content)?;
        match m.role.as_str() {
            "user" => prior.push(ironclaw_agent::Message::user(t)),
            "assistant" => prior.push(ironclaw_agent::Message::assistant(t)),
            "system" | "developer" | "tool" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown message role {other:?}"
                )))
            }
        }
    }
    st.chat.seed_history(&session.id, &prior)?;

    let id = format!("chatcmpl-{}", &session.id[4..]);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let model = req.model.clone();
    let (ev_tx, mut ev_rx) = mpsc::channel::<TurnEvent>(256);
    let chat = st.chat.clone();
    let user = caller.user.clone();
    let turn = tokio::spawn(async move { chat.turn(&user, &session, &text, None, ev_tx).await });

    if !req.stream {
        while ev_rx.recv().await.is_some() {}
        let report = turn
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        if let Some(err) = report.error {
            return Err(ApiError::Unavailable(format!(
                "the model provider failed: {err}"
            )));
        }
        let u = report.outcome.usage;
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": report.outcome.final_text()},
                         "finish_reason": if report.outcome.stopped.is_some() { "length" } else { "stop" }}],
            "usage": ironclaw_agent::openai_compat::usage_json(u)
        }))
        .into_response());
    }

    let chunk = move |delta: Value, finish: Option<&str>| {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Ok::<_, std::io::Error>(format!("data: {v}\n\n"))
    };
    let stream = async_stream(ev_rx, turn, chunk);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

type Chunk = Result<String, std::io::Error>;

/// SSE body: a role chunk, the text deltas as they come, a final chunk with
/// the finish reason (or an error event), then `[DONE]`.
fn async_stream(
    mut events: mpsc::Receiver<TurnEvent>,
    turn: tokio::task::JoinHandle<Result<crate::chat::TurnReport, ApiError>>,
    chunk: impl Fn(Value, Option<&str>) -> Chunk + Send + 'static,
) -> impl futures::Stream<Item = Chunk> {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    tokio::spawn(async move {
        let _ = tx
            .send(chunk(json!({"role": "assistant", "content": ""}), None))
            .await;
        while let Some(ev) = events.recv().await {
            if let TurnEvent::TextDelta { text } = ev {
                if tx
                    .send(chunk(json!({"content": text}), None))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let last = match turn.await {
            Ok(Ok(r)) if r.error.is_none() => chunk(
                json!({}),
                Some(if r.outcome.stopped.is_some() {
                    "length"
                } else {
                    "stop"
                }),
            ),
            Ok(Ok(r)) => Ok(format!(
                "data: {}\n\n",
                json!({"error": {"message": r.error, "type": "provider_error"}})
            )),
            Ok(Err(e)) => Ok(format!(
                "data: {}\n\n",
                json!({"error": {"message": e.to_string(), "type": "invalid_request_error"}})
            )),
            Err(e) => Ok(format!(
                "data: {}\n\n",
                json!({"error": {"message": e.to_string(), "type": "internal"}})
            )),
        };
        let _ = tx.send(last).await;
        let _ = tx.send(Ok("data: [DONE]\n\n".into())).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
