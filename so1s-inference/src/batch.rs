//! The batch scheduler of the model thread: requests are drained from the queue into
//! forward passes bounded in texts and tokens, one text of each request in turn, and each
//! request is answered once its last text has run.

use crate::metrics::ServiceMetrics;
use crate::options::ServiceOptions;
use crate::predictor::{Input, Predictor};
use so1s_core::{Error, Prediction, Result};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;
use tokio::sync::oneshot;

/// One request waiting for the model, tokenized already.
pub(crate) struct Job {
    pub(crate) inputs: Vec<Input>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Prediction>>>,
    pub(crate) queued_at: Instant,
    pub(crate) deadline: Instant,
}

/// The model thread's loop.
pub(crate) struct Worker {
    jobs: mpsc::Receiver<Job>,
    options: ServiceOptions,
    metrics: ServiceMetrics,
    max_len: Option<usize>,
    /// Whether the last busy spell (from idle to idle) served more than one request: only
    /// then does an idle model wait for company. It starts `true`, as configured.
    company: bool,
    /// Requests taken since the model was last idle.
    spell: usize,
    /// When the last forward pass ended.
    last_pass_end: Option<Instant>,
}

/// A request the model thread has taken off the queue, part-way through its texts.
struct Pending {
    job: Job,
    /// Tokens of each text.
    tokens: Vec<usize>,
    /// The next text to put in a pass.
    next: usize,
    /// Predictions of the texts run so far, in order.
    done: Vec<Prediction>,
}

impl Pending {
    fn left(&self) -> bool {
        self.next < self.job.inputs.len()
    }
}

/// Picks the texts of the next forward pass from `pending` (in arrival order), round-robin:
/// one text of each request in turn, until the pass holds `max_texts` texts or the next
/// text would take it over `max_tokens` (a pass always takes one). Returns, per text, the
/// request's index in `pending`, and the pass's tokens.
pub(crate) fn plan_pass(
    pending: &mut [(usize, &[usize])],
    max_texts: usize,
    max_tokens: usize,
) -> (Vec<usize>, usize) {
    let (mut pass, mut tokens) = (Vec::new(), 0);
    loop {
        let mut took = false;
        for (i, (next, counts)) in pending.iter_mut().enumerate() {
            let Some(&count) = counts.get(*next) else {
                continue;
            };
            if pass.len() >= max_texts || (!pass.is_empty() && tokens + count > max_tokens) {
                return (pass, tokens);
            }
            pass.push(i);
            tokens += count;
            *next += 1;
            took = true;
        }
        if !took {
            return (pass, tokens);
        }
    }
}

impl Worker {
    /// A model thread's loop over the queue `jobs`, batching as `options` say.
    pub(crate) fn new(
        jobs: mpsc::Receiver<Job>,
        options: ServiceOptions,
        metrics: ServiceMetrics,
    ) -> Self {
        Self {
            jobs,
            options,
            metrics,
            max_len: None,
            company: true,
            spell: 0,
            last_pass_end: None,
        }
    }

    /// Serves jobs until every handle is dropped. Token counts are capped at `max_len`, the
    /// model's longest sequence (texts are truncated there).
    pub(crate) fn run<P: Predictor>(mut self, mut predictor: P, max_len: Option<usize>) {
        self.max_len = max_len;
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            if pending.is_empty() {
                let job = match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => match self.jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return, // every handle dropped and the queue is empty
                    },
                };
                // A job queued while the last pass ran continues the busy spell; one queued
                // after it found the model idle: the spell ended there, and says whether
                // others came along in it.
                let idle_since = self.last_pass_end.filter(|end| job.queued_at > *end);
                if idle_since.is_some() || self.last_pass_end.is_none() {
                    if self.spell > 0 {
                        self.company = self.spell > 1;
                    }
                    self.spell = 0;
                }
                self.take(&mut pending, job);
                // If others came along last time, give the batch a moment to fill, for as
                // long as requests keep coming.
                let deadline = Instant::now() + self.options.max_batch_wait;
                while self.company && !self.full(&pending) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.jobs.recv_timeout(left.min(self.options.max_batch_gap)) {
                        Ok(job) => self.take(&mut pending, job),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            // Whatever queued meanwhile joins the next pass, so no request waits more than
            // about one pass for its first texts to run.
            while let Ok(job) = self.jobs.try_recv() {
                self.take(&mut pending, job);
            }
            self.drop_abandoned(&mut pending);
            if !pending.is_empty() {
                self.last_pass_end = Some(self.run_pass(&mut predictor, &mut pending));
            }
        }
    }

    /// Takes a job off the queue.
    fn take(&mut self, pending: &mut Vec<Pending>, job: Job) {
        self.spell += 1;
        self.metrics.queue_depth.dec();
        self.metrics
            .queue_seconds
            .observe(job.queued_at.elapsed().as_secs_f64());
        let max = self.max_len.unwrap_or(usize::MAX);
        let tokens = job.inputs.iter().map(|i| i.tokens().min(max)).collect();
        let done = Vec::with_capacity(job.inputs.len());
        pending.push(Pending {
            job,
            tokens,
            next: 0,
            done,
        });
    }

    /// Whether what is pending fills a pass already.
    fn full(&self, pending: &[Pending]) -> bool {
        let texts: usize = pending.iter().map(|p| p.job.inputs.len() - p.next).sum();
        let tokens: usize = pending
            .iter()
            .map(|p| p.tokens[p.next..].iter().sum::<usize>())
            .sum();
        texts >= self.options.max_batch_size || tokens >= self.options.max_batch_tokens
    }

    /// Drops the requests whose callers went away or whose deadline passed.
    fn drop_abandoned(&self, pending: &mut Vec<Pending>) {
        let now = Instant::now();
        pending.retain_mut(|p| {
            if p.job.reply.is_closed() {
                return false;
            }
            if now >= p.job.deadline {
                let waited = now.duration_since(p.job.queued_at);
                self.metrics.timeouts.inc();
                let reply = std::mem::replace(&mut p.job.reply, oneshot::channel().0);
                let _ = reply.send(Err(Error::Timeout(format!(
                    "the request's deadline passed after {} ms with {} of its {} texts run",
                    waited.as_millis(),
                    p.done.len(),
                    p.job.inputs.len()
                ))));
                return false;
            }
            true
        });
    }

    /// Runs one forward pass and answers the requests it finished; returns when the pass
    /// ended (before the answers went out).
    fn run_pass<P: Predictor>(&self, predictor: &mut P, pending: &mut Vec<Pending>) -> Instant {
        let mut cursors: Vec<(usize, &[usize])> = pending
            .iter()
            .map(|p| (p.next, p.tokens.as_slice()))
            .collect();
        let (pass, tokens) = plan_pass(
            &mut cursors,
            self.options.max_batch_size,
            self.options.max_batch_tokens,
        );
        let texts: Vec<Input> = pass
            .iter()
            .map(|&i| {
                let p = &mut pending[i];
                let input = std::mem::take(&mut p.job.inputs[p.next]);
                p.next += 1;
                input
            })
            .collect();
        let started = Instant::now();
        let result = predictor.predict(&texts).and_then(|predictions| {
            if predictions.len() == texts.len() {
                Ok(predictions)
            } else {
                Err(Error::Inference(format!(
                    "the model returned {} predictions for {} texts",
                    predictions.len(),
                    texts.len()
                )))
            }
        });
        let ended = Instant::now();
        self.metrics
            .forward_seconds
            .observe(ended.duration_since(started).as_secs_f64());
        self.metrics.batch_size.observe(texts.len() as f64);
        self.metrics.batch_tokens.observe(tokens as f64);
        if tokens as i64 > self.metrics.max_batch_tokens_seen.get() {
            self.metrics.max_batch_tokens_seen.set(tokens as i64);
        }
        match result {
            Ok(predictions) => {
                for (&i, prediction) in pass.iter().zip(predictions) {
                    pending[i].done.push(prediction);
                }
                let mut i = 0;
                while i < pending.len() {
                    if pending[i].left() {
                        i += 1;
                        continue;
                    }
                    let finished = pending.remove(i);
                    let _ = finished.job.reply.send(Ok(finished.done));
                }
            }
            Err(e) => {
                let message = e.chain();
                tracing::error!(error = %message, texts = texts.len(), "forward pass failed");
                let mut failed: Vec<usize> = pass;
                failed.sort_unstable();
                failed.dedup();
                for &i in failed.iter().rev() {
                    let p = pending.remove(i);
                    let _ = p.job.reply.send(Err(Error::Inference(message.clone())));
                }
            }
        }
        ended
    }
}
