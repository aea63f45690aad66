//! The interactions worker: carries out the clicks `POST /slack/interactions` committed, on
//! the leader, one at a time, durably.
//!
//! A click on `Resolve`, `Archive`, `Unresolve` or `Assign to me` becomes Sentry API calls
//! (`sentry::api`): first the action, then a comment on the issue naming the Slack user who
//! acted (Sentry credits the integration). Each step is recorded when it is done, so a
//! restart does not repeat it: the action is carried out at most once per click, except that
//! a process killed between Sentry's answer and the record repeats the (idempotent) status
//! change. After the action the issue's new state is stored and every message about it is
//! rewritten (`OutboxMessage::Refresh`), so the message shows who did what.
//!
//! `Mute here` and `Unmute here` are Sluice's own: a row in the store, no API call.
//!
//! Failures: Sentry down (5xx, 429, timeout, no connection) is retried with a backoff capped
//! at [`RETRY_MAX`], so the action reaches Sentry within one retry interval of it coming
//! back, for up to [`GIVE_UP_AFTER`]; the clicker is told once that Sluice keeps trying.
//! Sentry refusing (401, 403, 404…), no Sentry member with the clicker's email, or a click
//! that is not on a Sluice message end the click, and the clicker gets an ephemeral reply
//! saying why (through the click's `response_url`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::issue::{IssueAction, is_sentry_issue};
use crate::sentry::api::{ApiError, SentryApi, org_from_issue_url};
use crate::slack::SlackClient;
use crate::slack::buttons::{Decoded, decode, issue_key_of};
use crate::slack::interaction::Click;
use crate::slack::message::ephemeral;
use crate::state::AppState;
use crate::store::{IssueMessage, OutboxMessage, StoreError, StoredClick};

/// First retry of a click whose Sentry call failed for now.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retries: Sentry coming back is noticed within this.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A click Sentry has not taken for this long is given up, and the clicker told: acting on
/// an issue long after the click would surprise whoever clicked, and Slack takes replies on
/// a click's `response_url` for 30 minutes only.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(25 * 60);
/// Clicks taken per round.
const BATCH: u32 = 20;
/// Longest sleep when nothing is due (clicks committed by another replica are noticed at
/// least this often, when no notification reached this one).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Pause after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Runs the worker until `shutdown`; a click in progress finishes its step first.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let started = tokio::time::Instant::now();
        let wait = match round(&state, &shutdown).await {
            Ok(()) => next_wait(&state).await,
            Err(err) => {
                tracing::error!(error = %err, "interactions: store unavailable, retrying");
                STORE_RETRY
            }
        };
        tokio::select! {
            _ = state.clicks.notified() => {}
            _ = tokio::time::sleep_until(started + wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("interactions: worker stopped");
}

/// How long to sleep: until the next retry is due, at most [`IDLE_POLL`].
async fn next_wait(state: &AppState) -> Duration {
    match state.store.next_click_at().await {
        Ok(Some(due)) => {
            let ms = (due - state.clock.now_ms()).clamp(1, IDLE_POLL.as_millis() as i64);
            Duration::from_millis(ms as u64)
        }
        _ => IDLE_POLL,
    }
}

/// Carries out the clicks due now: the clicks on one issue one after the other, oldest first
/// (a Resolve then an Unresolve end unresolved), the issues side by side, so that a click
/// waiting for a slow Sentry does not hold the clicks on other issues.
async fn round(state: &AppState, shutdown: &CancellationToken) -> Result<(), StoreError> {
    let config = state.live.load().config.clone();
    let worker = Arc::new(Worker {
        state: state.clone(),
        slack: SlackClient::from_config(&config.slack),
        sentry: SentryApi::from_config(&config.sentry, state.counters.clone()),
        config,
    });
    let mut by_issue: BTreeMap<String, Vec<StoredClick>> = BTreeMap::new();
    for stored in state.store.due_clicks(state.clock.now_ms(), BATCH).await? {
        by_issue.entry(issue_of(&stored)).or_default().push(stored);
    }
    let mut issues = JoinSet::new();
    for clicks in by_issue.into_values() {
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        issues.spawn(async move {
            for stored in clicks {
                if shutdown.is_cancelled() {
                    break;
                }
                worker.carry_out(&stored).await?;
            }
            Ok::<(), StoreError>(())
        });
    }
    let mut result = Ok(());
    while let Some(done) = issues.join_next().await {
        match done {
            Ok(Err(err)) => result = Err(err),
            Err(panicked) => {
                tracing::error!(error = %panicked, "interactions: a click task failed")
            }
            Ok(Ok(())) => {}
        }
    }
    result
}

/// The issue a stored click is about, as its button says (`""` for one that does not read).
fn issue_of(stored: &StoredClick) -> String {
    serde_json::from_str::<Click>(&stored.payload)
        .ok()
        .and_then(|c| issue_key_of(&c.block_id).map(str::to_string))
        .unwrap_or_default()
}

/// What one round works with.
struct Worker {
    state: AppState,
    config: Config,
    slack: SlackClient,
    sentry: Option<SentryApi>,
}

/// How a step of a click ended.
enum Step {
    /// Done: on to the next step, or the end.
    Done,
    /// Sentry may take it later.
    Retry(String),
    /// Over without the action (the reason is for the clicker), counted as `outcome`.
    Refused {
        outcome: &'static str,
        reason: String,
    },
}

impl From<ApiError> for Step {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Retry(why) => Step::Retry(why),
            ApiError::Refused { reason, .. } => Step::Refused {
                outcome: "refused",
                reason: format!("Sentry refused it: {reason}"),
            },
        }
    }
}

/// The click, what it asks for, and the message it was made on.
struct Job {
    click: Click,
    action: IssueAction,
    message: IssueMessage,
}

impl Worker {
    /// Reads one committed click and takes it as far as it can go now.
    async fn carry_out(&self, stored: &StoredClick) -> Result<(), StoreError> {
        let now = self.state.clock.now_ms();
        let click: Click = match serde_json::from_str(&stored.payload) {
            Ok(click) => click,
            Err(err) => {
                tracing::error!(id = stored.id, error = %err, "interactions: unreadable click; dropped");
                return self.finish(stored, "unknown", "corrupt", true).await;
            }
        };
        let Some(job) = self.job(click.clone()).await? else {
            self.reply(
                &click,
                "That is not a Sluice action: this message or button is not one Sluice knows.",
            )
            .await;
            return self.finish(stored, "unknown", "not_sluice", true).await;
        };
        let label = job.action.label();
        let step = match stored.step {
            0 => self.act(&job, now).await?,
            _ => Step::Done,
        };
        match step {
            Step::Done if stored.step == 0 && job.action.calls_sentry() => {
                self.state.store.click_step(stored.id, 1).await?;
                self.comment_step(stored, &job, 0).await
            }
            Step::Done if stored.step >= 1 => {
                self.comment_step(stored, &job, stored.attempts).await
            }
            Step::Done => self.finish(stored, label, "done", false).await,
            Step::Retry(why) => self.retry(stored, &job.click, label, &why).await,
            Step::Refused { outcome, reason } => {
                self.reply(&job.click, &reason).await;
                self.finish(stored, label, outcome, true).await
            }
        }
    }

    /// What the click asks for and on which of Sluice's messages; `None` when it is not a
    /// Sluice button on a message Sluice posted.
    async fn job(&self, click: Click) -> Result<Option<Job>, StoreError> {
        let Decoded::Action(action) = decode(&click.action_id, click.value.as_deref()) else {
            return Ok(None);
        };
        let (Some(channel_id), Some(ts)) = (&click.channel_id, &click.message_ts) else {
            return Ok(None);
        };
        let Some(message) = self.state.store.issue_message(channel_id, ts).await? else {
            return Ok(None);
        };
        if issue_key_of(&click.block_id) != Some(message.issue_key.as_str()) {
            return Ok(None);
        }
        Ok(Some(Job {
            click,
            action,
            message,
        }))
    }

    /// The action itself: a mute, or the Sentry call; on success the issue's new state is
    /// stored and its messages queued for rewriting.
    async fn act(&self, job: &Job, now: i64) -> Result<Step, StoreError> {
        let issue = job.message.issue_key.as_str();
        let channel = job.message.channel.as_str();
        match job.action {
            IssueAction::Mute { secs } => {
                let until = now.saturating_add((secs as i64).saturating_mul(1000));
                let by = self.display_name(&job.click).await;
                self.state
                    .store
                    .mute(issue, channel, until, Some(&by), now)
                    .await?;
                self.state.wake.notify_one();
                return Ok(Step::Done);
            }
            IssueAction::Unmute => {
                self.state.store.unmute(issue, channel, now).await?;
                self.state.wake.notify_one();
                return Ok(Step::Done);
            }
            _ => {}
        }
        let (api, org) = match self.sentry_target(job).await? {
            Ok(target) => target,
            Err(reason) => {
                return Ok(Step::Refused {
                    outcome: "refused",
                    reason,
                });
            }
        };
        let result = match job.action {
            IssueAction::AssignToMe => match self.assignee(api, &org, &job.click).await {
                Ok(user_id) => api.assign(&org, issue, &user_id).await,
                Err(step) => return Ok(step),
            },
            action => api.update_issue(&org, issue, &action).await,
        };
        match result {
            Ok(mut new_state) => {
                new_state.by = Some(self.display_name(&job.click).await);
                new_state.at_ms = Some(now);
                self.state
                    .store
                    .set_issue_state(issue, &new_state, now)
                    .await?;
                self.state.wake.notify_one();
                Ok(Step::Done)
            }
            Err(err) => Ok(err.into()),
        }
    }

    /// The API client and the organization to call it for, or why the click cannot go to
    /// Sentry.
    async fn sentry_target(
        &self,
        job: &Job,
    ) -> Result<Result<(&SentryApi, String), String>, StoreError> {
        let Some(api) = &self.sentry else {
            return Ok(Err(
                "Sentry actions are not set up here (`sentry.api_token` is not set).".into(),
            ));
        };
        if !is_sentry_issue(&job.message.issue_key) {
            return Ok(Err(
                "This alert is not a Sentry issue, so Sentry cannot act on it.".into(),
            ));
        }
        let from_message = match &job.message.message {
            OutboxMessage::Alert { alert, .. } => {
                alert.issue_url.as_deref().and_then(org_from_issue_url)
            }
            _ => None,
        };
        let org = match from_message {
            Some(org) => Some(org),
            None => {
                let stats = self
                    .state
                    .store
                    .issue_stats(&job.message.issue_key, self.state.clock.now_ms())
                    .await?;
                stats.issue_url.as_deref().and_then(org_from_issue_url)
            }
        }
        .or_else(|| self.config.sentry.organization.clone());
        Ok(match org {
            Some(org) => Ok((api, org)),
            None => Err(
                "Sluice does not know this issue's Sentry organization: set `sentry.organization`."
                    .into(),
            ),
        })
    }

    /// The Sentry user id of the clicker: their email from Slack, then the Sentry member
    /// with that email.
    async fn assignee(&self, api: &SentryApi, org: &str, click: &Click) -> Result<String, Step> {
        let user = match self.slack_user(click).await {
            Ok(user) => user,
            Err(step) => return Err(step),
        };
        let Some(email) = user.email else {
            return Err(Step::Refused {
                outcome: "no_member",
                reason: "Your Slack profile shows no email address, so Sluice cannot find you in Sentry (the Slack app needs `users:read.email`).".into(),
            });
        };
        match api.find_member(org, &email).await {
            Ok(Some(member)) => Ok(member.user_id),
            Ok(None) => Err(Step::Refused {
                outcome: "no_member",
                reason: format!(
                    "No member of the Sentry organization `{org}` has the email {email}, so the issue was not assigned."
                ),
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// The clicker as Slack knows them (`users.info`).
    async fn slack_user(&self, click: &Click) -> Result<crate::slack::transport::SlackUser, Step> {
        let token = self
            .config
            .slack
            .bot_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .unwrap_or_default();
        match self
            .slack
            .user_info(&self.config.slack.api_base, &token, &click.user_id)
            .await
        {
            Ok(user) => Ok(user),
            Err(crate::slack::Retry::Never(why)) => Err(Step::Refused {
                outcome: "refused",
                reason: format!("Slack would not say who you are ({}).", why.code),
            }),
            Err(other) => Err(Step::Retry(format!("users.info: {other:?}"))),
        }
    }

    /// The clicker's name for the state line and the comment: their real name from Slack
    /// where it answers, else their handle.
    async fn display_name(&self, click: &Click) -> String {
        match self.slack_user(click).await {
            Ok(user) => user
                .real_name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(user.name),
            Err(_) => click.user_name.clone(),
        }
    }

    /// The second step: the Sentry comment naming who acted. The action is done whatever
    /// becomes of it; a refused comment is logged, not retried.
    async fn comment_step(
        &self,
        stored: &StoredClick,
        job: &Job,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let label = job.action.label();
        let Some(api) = &self.sentry else {
            return self.finish(stored, label, "done", false).await;
        };
        let org = match self.sentry_target(job).await? {
            Ok((_, org)) => org,
            Err(_) => return self.finish(stored, label, "done", false).await,
        };
        let who = self.display_name(&job.click).await;
        let text = comment_text(&job.action, &who);
        match api.comment(&org, &job.message.issue_key, &text).await {
            Ok(()) => self.finish(stored, label, "done", false).await,
            Err(ApiError::Retry(why)) => {
                let stored = StoredClick {
                    attempts,
                    ..stored.clone()
                };
                self.retry(&stored, &job.click, label, &why).await
            }
            Err(ApiError::Refused { reason, .. }) => {
                tracing::warn!(id = stored.id, %reason, "interactions: the comment naming who acted was refused");
                self.finish(stored, label, "done", false).await
            }
        }
    }

    /// A retryable failure: try again after a backoff, or give up past [`GIVE_UP_AFTER`].
    async fn retry(
        &self,
        stored: &StoredClick,
        click: &Click,
        label: &'static str,
        why: &str,
    ) -> Result<(), StoreError> {
        let now = self.state.clock.now_ms();
        let attempts = stored.attempts + 1;
        let age = Duration::from_millis((now - stored.received_at_ms).max(0) as u64);
        if age >= GIVE_UP_AFTER && stored.step >= 1 {
            // The action was done; only the comment naming who acted is missing.
            tracing::warn!(id = stored.id, %why, "interactions: gave up the comment naming who acted");
            return self.finish(stored, label, "done", false).await;
        }
        if age >= GIVE_UP_AFTER {
            self.reply(click, &format!("Sentry did not take this for {} minutes ({why}); nothing was changed and nothing more will be tried. Please try again, or act in Sentry.", GIVE_UP_AFTER.as_secs() / 60))
                .await;
            return self.finish(stored, label, "gave_up", true).await;
        }
        let wait = crate::outbox::backoff(attempts, RETRY_INITIAL, RETRY_MAX, rand::rng().random());
        tracing::warn!(id = stored.id, attempts, retry_in_ms = wait.as_millis() as u64, %why, "interactions: Sentry did not take the click; will retry");
        self.state.counters.slack_interaction(label, "retry");
        if attempts == 1 && stored.step == 0 {
            self.reply(click, "Sentry is not answering right now. Sluice keeps trying and the message will show the change once it is made.")
                .await;
        }
        self.state
            .store
            .retry_click(stored.id, attempts, now + wait.as_millis() as i64, why)
            .await
    }

    /// The click is over: recorded, counted and logged.
    async fn finish(
        &self,
        stored: &StoredClick,
        label: &'static str,
        outcome: &'static str,
        failed: bool,
    ) -> Result<(), StoreError> {
        tracing::info!(
            id = stored.id,
            action = label,
            outcome,
            "interactions: click carried out"
        );
        self.state.counters.slack_interaction(label, outcome);
        self.state
            .store
            .finish_click(stored.id, outcome, failed, self.state.clock.now_ms())
            .await
    }

    /// An ephemeral reply to the clicker (best effort: logged when it fails).
    async fn reply(&self, click: &Click, text: &str) {
        let Some(url) = &click.response_url else {
            return;
        };
        let outcome = self.slack.respond(url, &ephemeral(text)).await;
        if !matches!(outcome, crate::slack::SendOutcome::Posted { .. }) {
            tracing::warn!(?outcome, "interactions: could not answer the clicker");
        }
    }
}

/// The Sentry comment after an action: who did it, from Slack.
pub fn comment_text(action: &IssueAction, who: &str) -> String {
    let what = match action {
        IssueAction::Resolve => "Resolved".to_string(),
        IssueAction::ResolveInNextRelease => "Resolved in the next release".to_string(),
        IssueAction::Unresolve => "Reopened".to_string(),
        IssueAction::Archive { archive } => format!("Archived {}", archive.label()),
        IssueAction::AssignToMe => "Assigned to themselves".to_string(),
        IssueAction::Mute { .. } | IssueAction::Unmute => "Muted".to_string(),
    };
    format!("{what} from Slack by {who} (through Sluice).")
}
