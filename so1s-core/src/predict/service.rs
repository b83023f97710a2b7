//! [`TransformerService`]: the model on its own thread, fed in batches.

use super::encoder::Precision;
use super::pipeline::{ModelInfo, Pipeline};
use super::Prediction;
use crate::metrics::ServiceMetrics;
use crate::model::ModelLayout;
use crate::{Error, Result};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Something that turns a batch of texts into one prediction per text. [`Pipeline`] is the
/// real one; tests plug in others.
pub trait Predictor {
    /// Runs one forward pass over `texts`, returning predictions in the same order.
    fn predict(&mut self, texts: &[String]) -> Result<Vec<Prediction>>;
}

/// How the model thread batches and how much may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for more to arrive. Requests that queue
    /// while a forward pass runs join the next batch whatever this is.
    pub max_batch_wait: Duration,
    /// Most requests waiting for the model; beyond that a request fails at once with
    /// [`Error::Overloaded`].
    pub queue_capacity: usize,
    /// libtorch intra-op threads (`None`: libtorch's default, one per core).
    pub threads: Option<usize>,
    /// Run the forward pass with so1s's own encoder in this precision (BERT sentence
    /// embeddings only); `None`: rust-bert's.
    pub precision: Option<Precision>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_wait: Duration::from_millis(2),
            queue_capacity: 512,
            threads: None,
            precision: None,
        }
    }
}

/// One request waiting for the model.
struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Prediction>>>,
    queued_at: Instant,
}

/// A cheap, cloneable handle to a model running on its own thread.
///
/// The thread stops once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct TransformerService {
    inner: Arc<Inner>,
}

struct Inner {
    queue: SyncSender<Job>,
    info: ModelInfo,
    options: ServiceOptions,
    metrics: ServiceMetrics,
}

const WARM_UP_TEXT: &str = "so1s warm-up: the model is loaded and a first pass has run.";

impl TransformerService {
    /// Loads an inspected model directory with rust-bert on a new thread, runs one warm-up
    /// pass, and returns the handle once the model can answer.
    pub async fn load(layout: ModelLayout, options: ServiceOptions) -> Result<Self> {
        let precision = options.precision;
        Self::start(move || Pipeline::load(&layout, precision), options).await
    }

    /// Starts a model thread around any [`Predictor`], built on that thread by `build` (so
    /// it need not be `Send`). Runs one warm-up pass before returning.
    pub async fn start<P, F>(build: F, options: ServiceOptions) -> Result<Self>
    where
        P: Predictor + 'static,
        F: FnOnce() -> Result<(P, ModelInfo)> + Send + 'static,
    {
        let (queue, jobs) = mpsc::sync_channel(options.queue_capacity.max(1));
        let (started, ready) = oneshot::channel();
        let metrics = ServiceMetrics::default();
        let worker = Worker {
            jobs,
            options: options.clone(),
            metrics: metrics.clone(),
        };
        let threads = options.threads;
        std::thread::Builder::new()
            .name("so1s-model".into())
            .spawn(move || {
                if let Some(threads) = threads {
                    tch::set_num_threads(threads as i32);
                }
                let built = build().and_then(|(mut predictor, info)| {
                    predictor.predict(&[WARM_UP_TEXT.to_owned()])?;
                    Ok((predictor, info))
                });
                match built {
                    Ok((predictor, info)) => {
                        if started.send(Ok(info)).is_ok() {
                            worker.run(predictor);
                        }
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            })
            .map_err(|source| Error::Io {
                context: "starting the model thread".into(),
                source,
            })?;
        let info = ready
            .await
            .map_err(|_| Error::Load("the model thread stopped while loading".into()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                queue,
                info,
                options,
                metrics,
            }),
        })
    }

    /// What the model is and answers.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// The options the service runs with.
    pub fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    /// The service's metrics (batch sizes, forward-pass time, queue depth and wait).
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.inner.metrics
    }

    /// Predicts every text, in order. The texts join whatever batch forms next; if the queue
    /// is full this fails at once with [`Error::Overloaded`].
    pub async fn predict(&self, texts: Vec<String>) -> Result<Vec<Prediction>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            texts,
            reply,
            queued_at: Instant::now(),
        };
        let depth = &self.inner.metrics.queue_depth;
        depth.inc();
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                depth.dec();
                return Err(Error::Overloaded {
                    waiting: self.inner.options.queue_capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                depth.dec();
                return Err(Error::NotReady);
            }
        }
        answer.await.map_err(|_| Error::NotReady)?
    }

    /// Predicts one text.
    pub async fn predict_one(&self, text: impl Into<String>) -> Result<Prediction> {
        self.predict(vec![text.into()])
            .await?
            .pop()
            .ok_or_else(|| Error::Inference("the model returned no prediction".into()))
    }
}

/// The model thread's loop.
struct Worker {
    jobs: mpsc::Receiver<Job>,
    options: ServiceOptions,
    metrics: ServiceMetrics,
}

impl Worker {
    fn run<P: Predictor>(self, mut predictor: P) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return, // every handle dropped
                },
            };
            let (batch, next) = self.fill(first);
            carried = next;
            self.run_batch(&mut predictor, batch);
        }
    }

    /// Gathers jobs behind `first` until the batch is full or the wait is over. A job that
    /// would overflow the batch is handed back for the next one.
    fn fill(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + self.options.max_batch_wait;
        let mut size = first.texts.len();
        let mut batch = vec![self.dequeued(first)];
        while size < self.options.max_batch_size {
            let job = match self.jobs.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.jobs.recv_timeout(left) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let job = self.dequeued(job);
            if size + job.texts.len() > self.options.max_batch_size {
                return (batch, Some(job));
            }
            size += job.texts.len();
            batch.push(job);
        }
        (batch, None)
    }

    fn dequeued(&self, job: Job) -> Job {
        self.metrics.queue_depth.dec();
        self.metrics
            .queue_seconds
            .observe(job.queued_at.elapsed().as_secs_f64());
        job
    }

    fn run_batch<P: Predictor>(&self, predictor: &mut P, batch: Vec<Job>) {
        // Callers that went away need no answer: leave their texts out of the pass.
        let batch: Vec<Job> = batch
            .into_iter()
            .filter(|job| !job.reply.is_closed())
            .collect();
        if batch.is_empty() {
            return;
        }
        let mut sizes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut texts = Vec::new();
        for job in batch {
            sizes.push(job.texts.len());
            replies.push(job.reply);
            texts.extend(job.texts);
        }
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
        self.metrics
            .forward_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(texts.len() as f64);
        match result {
            Ok(predictions) => {
                let mut predictions = predictions.into_iter();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(predictions.by_ref().take(size).collect()));
                }
            }
            Err(e) => {
                let message = e.chain();
                tracing::error!(error = %message, texts = texts.len(), "forward pass failed");
                for reply in replies {
                    let _ = reply.send(Err(Error::Inference(message.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Task;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Answers each text with its length, records batch sizes, and takes `delay` per pass.
    struct Echo {
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    impl Predictor for Echo {
        fn predict(&mut self, texts: &[String]) -> Result<Vec<Prediction>> {
            std::thread::sleep(self.delay);
            self.batches.lock().unwrap().push(texts.len());
            if texts.iter().any(|t| t == "fail") {
                return Err(Error::Inference("asked to fail".into()));
            }
            Ok(texts
                .iter()
                .map(|t| Prediction::Embedding(vec![t.len() as f32]))
                .collect())
        }
    }

    fn info() -> ModelInfo {
        ModelInfo {
            task: Task::SentenceEmbeddings,
            architecture: "bert",
            output_shape: vec![1],
            labels: vec![],
            max_sequence_length: None,
            forward_pass: "test",
        }
    }

    async fn echo(
        options: ServiceOptions,
        delay: Duration,
    ) -> (TransformerService, Arc<Mutex<Vec<usize>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let recorded = batches.clone();
        let service =
            TransformerService::start(move || Ok((Echo { batches, delay }, info())), options)
                .await
                .unwrap();
        // forget the warm-up pass
        recorded.lock().unwrap().clear();
        (service, recorded)
    }

    #[tokio::test]
    async fn concurrent_requests_share_forward_passes_and_get_their_own_answers() {
        let options = ServiceOptions {
            max_batch_size: 8,
            max_batch_wait: Duration::from_millis(50),
            ..ServiceOptions::default()
        };
        let (service, batches) = echo(options, Duration::from_millis(20)).await;
        let calls = (0..20).map(|i| {
            let service = service.clone();
            tokio::spawn(async move { (i, service.predict(vec!["x".repeat(i)]).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (i, answer) = call.unwrap();
            assert_eq!(answer.unwrap(), vec![Prediction::Embedding(vec![i as f32])]);
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.len() < 20, "no batching happened: {batches:?}");
        assert!(
            batches.iter().all(|&n| n <= 8),
            "batch over the limit: {batches:?}"
        );
    }

    #[tokio::test]
    async fn multi_text_requests_stay_whole_and_in_order() {
        let options = ServiceOptions {
            max_batch_size: 4,
            max_batch_wait: Duration::from_millis(20),
            ..ServiceOptions::default()
        };
        let (service, batches) = echo(options, Duration::ZERO).await;
        let a = service.predict(vec!["a".into(), "bb".into(), "ccc".into()]);
        let b = service.predict(vec!["dddd".into(), "eeeee".into()]);
        let (a, b) = tokio::join!(a, b);
        let lengths = |p: Vec<Prediction>| -> Vec<f32> {
            p.into_iter()
                .map(|p| match p {
                    Prediction::Embedding(v) => v[0],
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(lengths(a.unwrap()), [1.0, 2.0, 3.0]);
        assert_eq!(lengths(b.unwrap()), [4.0, 5.0]);
        // 3 + 2 texts exceed a batch of 4: the second request waits for its own pass.
        assert_eq!(*batches.lock().unwrap(), [3, 2]);
    }

    #[tokio::test]
    async fn a_full_queue_is_an_immediate_overload_error() {
        let options = ServiceOptions {
            max_batch_size: 1,
            max_batch_wait: Duration::ZERO,
            queue_capacity: 2,
            threads: None,
            precision: None,
        };
        let (service, _) = echo(options, Duration::from_millis(200)).await;
        let spawn = || {
            let service = service.clone();
            tokio::spawn(async move { service.predict(vec!["x".into()]).await })
        };
        let wait_for_depth = |depth: i64| {
            let service = service.clone();
            async move {
                while service.metrics().queue_depth.get() != depth {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        // One request in the forward pass, then two waiting: the queue is full.
        let mut pending = vec![spawn()];
        while batches_started(&service) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pending.push(spawn());
        pending.push(spawn());
        wait_for_depth(2).await;
        let err = service.predict(vec!["y".into()]).await.unwrap_err();
        assert!(matches!(err, Error::Overloaded { waiting: 2 }), "{err:?}");
        for call in pending {
            call.await.unwrap().unwrap();
        }
    }

    /// Requests the model thread has taken off the queue.
    fn batches_started(service: &TransformerService) -> u64 {
        let text = {
            let mut registry = prometheus_client::registry::Registry::default();
            service.metrics().register(&mut registry);
            crate::metrics::render(&registry)
        };
        text.lines()
            .find_map(|line| line.strip_prefix("so1s_queue_wait_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_failed_pass_fails_its_requests_and_the_service_goes_on() {
        let (service, _) = echo(ServiceOptions::default(), Duration::ZERO).await;
        let err = service.predict(vec!["fail".into()]).await.unwrap_err();
        assert!(err.to_string().contains("asked to fail"), "{err}");
        let ok = service.predict_one("fine").await.unwrap();
        assert_eq!(ok, Prediction::Embedding(vec![4.0]));
    }

    #[tokio::test]
    async fn a_model_that_fails_to_load_reports_why() {
        let err = TransformerService::start(
            || -> Result<(Echo, ModelInfo)> { Err(Error::Load("weights are corrupt".into())) },
            ServiceOptions::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("weights are corrupt"), "{err}");
    }

    #[tokio::test]
    async fn the_queue_depth_gauge_returns_to_zero() {
        let (service, _) = echo(ServiceOptions::default(), Duration::from_millis(5)).await;
        let counter = Arc::new(AtomicUsize::new(0));
        let calls = (0..10).map(|_| {
            let service = service.clone();
            let counter = counter.clone();
            async move {
                service.predict(vec!["x".into()]).await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        futures::future::join_all(calls).await;
        assert_eq!(counter.load(Ordering::SeqCst), 10);
        assert_eq!(service.metrics().queue_depth.get(), 0);
    }
}
