//! [`TransformerService`]: the model on its own thread, fed in batches (by `batch`, the
//! scheduler of that thread).

use crate::batch::{Job, Worker};
use crate::metrics::ServiceMetrics;
use crate::options::ServiceOptions;
use crate::pipeline::Pipeline;
use crate::predictor::{Input, ModelInfo, Predictor};
use crate::tokenize::Tokenize;
use so1s_core::model::ModelLayout;
use so1s_core::predict::CpuFeatures;
use so1s_core::{Error, Prediction, Result};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
    /// What requests are tokenized with before they are queued, if the model takes ids.
    tokenizer: Option<Arc<dyn Tokenize>>,
    options: ServiceOptions,
    metrics: ServiceMetrics,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// The last handle waits for the model thread to end: tensors and the model are freed before
/// the process exits, never while libtorch's own teardown runs (which crashed `so1s-predict`
/// on SIGTERM under load).
impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is queued.
        let (closed, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(worker) = self.worker.take() {
            if worker.thread().id() != std::thread::current().id() {
                let _ = worker.join();
            }
        }
    }
}

/// Requests up to this many bytes of text are tokenized on the caller's thread (tens of
/// microseconds); larger ones on a blocking thread.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

const WARM_UP_TEXT: &str = "so1s warm-up: the model is loaded and a first pass has run.";

impl TransformerService {
    /// Loads an inspected model directory on a new thread (the forward pass and precision its
    /// options choose, [`Pipeline::choose`]), runs one warm-up pass, and returns the handle
    /// once the model can answer.
    pub async fn load(layout: ModelLayout, options: ServiceOptions) -> Result<Self> {
        let (pass, precision) = (options.forward_pass, options.precision);
        let service =
            Self::start(move || Pipeline::load(&layout, pass, precision), options).await?;
        let info = service.info();
        tracing::info!(
            forward_pass = info.forward_pass,
            reason = %info.reason,
            cpu = %CpuFeatures::detect().summary(),
            "model loaded"
        );
        Ok(service)
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
        let worker = Worker::new(jobs, options.clone(), metrics.clone());
        let threads = options.threads;
        let worker = std::thread::Builder::new()
            .name("so1s-model".into())
            .spawn(move || {
                if let Some(threads) = threads {
                    tch::set_num_threads(threads as i32);
                }
                let built = build().and_then(|(mut predictor, info)| {
                    let tokenizer = predictor.tokenizer();
                    let warm_up = vec![WARM_UP_TEXT.to_owned()];
                    predictor.predict(&Input::batch(warm_up, tokenizer.as_deref())?)?;
                    Ok((predictor, info, tokenizer))
                });
                match built {
                    Ok((predictor, info, tokenizer)) => {
                        let max_len = info.max_sequence_length;
                        if started.send(Ok((info, tokenizer))).is_ok() {
                            worker.run(predictor, max_len);
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
        let (info, tokenizer) = ready
            .await
            .map_err(|_| Error::Load("the model thread stopped while loading".into()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                queue,
                info,
                tokenizer,
                options,
                metrics,
                worker: Some(worker),
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
    /// is full this fails at once with [`Error::Overloaded`]. Waits at most the service's
    /// `request_timeout`.
    pub async fn predict(&self, texts: Vec<String>) -> Result<Vec<Prediction>> {
        self.predict_within(texts, self.inner.options.request_timeout)
            .await
    }

    /// [`TransformerService::predict`] with a deadline of the caller's: past `timeout`, the
    /// texts not yet run are dropped and the call fails with [`Error::Timeout`].
    ///
    /// The texts are tokenized here, once, before they are queued: the model thread only
    /// runs forward passes. A large request is tokenized on a blocking thread, so that the
    /// caller's runtime goes on serving others meanwhile.
    pub async fn predict_within(
        &self,
        texts: Vec<String>,
        timeout: Duration,
    ) -> Result<Vec<Prediction>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = self.tokenize(texts).await?;
        self.submit(inputs, timeout).await
    }

    /// Each of `texts`' relevance to `query` ([`Prediction::Relevance`]), in the texts'
    /// order: a cross-encoder's pairs, queued as [`TransformerService::predict_within`]
    /// queues texts. A model whose tokenizer takes no pairs is an invalid input.
    pub async fn rerank_within(
        &self,
        query: String,
        texts: Vec<String>,
        timeout: Duration,
    ) -> Result<Vec<Prediction>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let Some(tokenizer) = self.inner.tokenizer.clone() else {
            return Err(Error::InvalidInput(
                "this model's forward pass takes no sentence pairs".into(),
            ));
        };
        let bytes: usize = texts.iter().map(String::len).sum::<usize>() + query.len();
        let pair = move || Input::pairs(&query, texts, &*tokenizer);
        let inputs = match bytes <= INLINE_TOKENIZE_BYTES {
            true => pair()?,
            false => tokio::task::spawn_blocking(pair)
                .await
                .map_err(|e| Error::Inference(format!("tokenizing the request: {e}")))??,
        };
        self.submit(inputs, timeout).await
    }

    /// Queues `inputs` for the model thread and waits for their predictions.
    async fn submit(&self, inputs: Vec<Input>, timeout: Duration) -> Result<Vec<Prediction>> {
        let (reply, answer) = oneshot::channel();
        let now = Instant::now();
        let job = Job {
            inputs,
            reply,
            queued_at: now,
            deadline: now + timeout,
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

    /// `texts` as the model thread takes them.
    async fn tokenize(&self, texts: Vec<String>) -> Result<Vec<Input>> {
        let tokenizer = self.inner.tokenizer.clone();
        let bytes: usize = texts.iter().map(String::len).sum();
        if tokenizer.is_none() || bytes <= INLINE_TOKENIZE_BYTES {
            return Input::batch(texts, tokenizer.as_deref());
        }
        tokio::task::spawn_blocking(move || Input::batch(texts, tokenizer.as_deref()))
            .await
            .map_err(|e| Error::Inference(format!("tokenizing the request: {e}")))?
    }

    /// Predicts one text.
    pub async fn predict_one(&self, text: impl Into<String>) -> Result<Prediction> {
        self.predict(vec![text.into()])
            .await?
            .pop()
            .ok_or_else(|| Error::Inference("the model returned no prediction".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::plan_pass;
    use so1s_core::model::Task;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Answers each text with its length, records batch sizes, and takes `delay` per pass.
    /// A text's tokens are its length.
    struct Echo {
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    /// Token ids as long as the text.
    struct Chars;

    impl Tokenize for Chars {
        fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
            Ok(texts.iter().map(|t| vec![0; t.len()]).collect())
        }
    }

    impl Predictor for Echo {
        fn tokenizer(&self) -> Option<Arc<dyn Tokenize>> {
            Some(Arc::new(Chars))
        }

        fn predict(&mut self, inputs: &[Input]) -> Result<Vec<Prediction>> {
            std::thread::sleep(self.delay);
            self.batches.lock().unwrap().push(inputs.len());
            if inputs.iter().any(|input| input.text == "fail") {
                return Err(Error::Inference("asked to fail".into()));
            }
            // The ids the request handler made reach the model thread.
            Ok(inputs
                .iter()
                .map(|input| Prediction::Embedding(vec![input.ids.as_ref().unwrap().len() as f32]))
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
            reason: "a test predictor".into(),
            accuracy: None,
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
            max_batch_gap: Duration::from_millis(50),
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
    async fn multi_text_requests_share_passes_and_stay_in_order() {
        let options = ServiceOptions {
            max_batch_size: 4,
            max_batch_wait: Duration::from_millis(20),
            max_batch_gap: Duration::from_millis(20),
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
        // 3 + 2 texts exceed a batch of 4: the requests share the first pass, the rest of
        // the first one runs in the second.
        assert_eq!(*batches.lock().unwrap(), [4, 1]);
    }

    #[tokio::test]
    async fn a_batch_waits_for_company_only_while_requests_keep_coming() {
        // Two requests 60 ms apart, a 500 ms wait: with a 5 ms gap the first runs alone
        // (nobody came within 5 ms); with the gap as long as the wait they share a pass.
        for (gap, expected) in [(5, vec![1, 1]), (500, vec![2])] {
            let options = ServiceOptions {
                max_batch_wait: Duration::from_millis(500),
                max_batch_gap: Duration::from_millis(gap),
                ..ServiceOptions::default()
            };
            let (service, batches) = echo(options, Duration::ZERO).await;
            let first = tokio::spawn({
                let service = service.clone();
                async move { service.predict(vec!["a".into()]).await }
            });
            tokio::time::sleep(Duration::from_millis(60)).await;
            let second = service.predict(vec!["bb".into()]).await.unwrap();
            assert_eq!(second, vec![Prediction::Embedding(vec![2.0])]);
            assert_eq!(
                first.await.unwrap().unwrap(),
                vec![Prediction::Embedding(vec![1.0])]
            );
            assert_eq!(*batches.lock().unwrap(), expected, "gap {gap} ms");
        }
    }

    #[tokio::test]
    async fn a_lone_clients_requests_do_not_wait_for_company_until_others_come() {
        // Wait and gap of 400 ms, passes of 30 ms. Requests sent one after another, 60 ms
        // apart, would share passes if each idle start waited; a lone client's do not.
        let options = ServiceOptions {
            max_batch_wait: Duration::from_millis(400),
            max_batch_gap: Duration::from_millis(400),
            ..ServiceOptions::default()
        };
        let (service, batches) = echo(options, Duration::from_millis(30)).await;
        let two_apart = || async {
            let first = tokio::spawn({
                let service = service.clone();
                async move { service.predict(vec!["a".into()]).await }
            });
            tokio::time::sleep(Duration::from_millis(60)).await;
            service.predict(vec!["bb".into()]).await.unwrap();
            first.await.unwrap().unwrap();
        };
        // Started as configured: the first waits and the second joins it.
        two_apart().await;
        // One request alone in its spell: from now on nobody waits.
        service.predict(vec!["c".into()]).await.unwrap();
        two_apart().await;
        assert_eq!(*batches.lock().unwrap(), [2, 1, 1, 1]);
        // Two at once (one pass or two, either way one busy spell): waiting resumes.
        let (a, b) = tokio::join!(
            service.predict(vec!["d".into()]),
            service.predict(vec!["e".into()])
        );
        a.unwrap();
        b.unwrap();
        batches.lock().unwrap().clear();
        two_apart().await;
        assert_eq!(*batches.lock().unwrap(), [2]);
    }

    #[test]
    fn passes_take_one_text_of_each_request_in_turn_within_the_budgets() {
        let big = [5; 6];
        let small = [1];
        let mut pending = vec![(0, &big[..]), (0, &small[..])];
        // 10 tokens: big, small, big; the next big text would make 16.
        assert_eq!(plan_pass(&mut pending, 32, 12), (vec![0, 1, 0], 11));
        assert_eq!(plan_pass(&mut pending, 32, 12), (vec![0, 0], 10));
        assert_eq!(plan_pass(&mut pending, 1, 100), (vec![0], 5));
        // One text over the budget still runs, alone.
        let huge = [50];
        let mut pending = vec![(0, &huge[..])];
        assert_eq!(plan_pass(&mut pending, 32, 10), (vec![0], 50));
        assert_eq!(plan_pass(&mut pending, 32, 10), (vec![], 0));
    }

    #[tokio::test]
    async fn a_large_request_runs_in_token_bounded_passes_and_a_small_one_goes_between() {
        let options = ServiceOptions {
            max_batch_tokens: 10,
            max_batch_wait: Duration::ZERO,
            ..ServiceOptions::default()
        };
        let (service, batches) = echo(options, Duration::from_millis(20)).await;
        let large: Vec<String> = (0..20).map(|i| format!("{i:05}")).collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        let big = {
            let (service, order) = (service.clone(), order.clone());
            tokio::spawn(async move {
                let answer = service.predict(large).await.unwrap();
                order.lock().unwrap().push("large");
                answer
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let small = service.predict_one("x").await.unwrap();
        order.lock().unwrap().push("small");
        let big = big.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["small", "large"]);
        assert_eq!(small, Prediction::Embedding(vec![1.0]));
        assert_eq!(big.len(), 20);
        assert!(big.iter().all(|p| *p == Prediction::Embedding(vec![5.0])));
        // 5-token texts, 10 tokens a pass: two a pass, and once the small one squeezed in.
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 21);
        assert!(batches.iter().all(|&n| n <= 2), "{batches:?}");
        assert!(service.metrics().max_batch_tokens_seen.get() <= 10);
    }

    #[tokio::test]
    async fn past_its_deadline_a_request_is_dropped_with_a_timeout() {
        let options = ServiceOptions {
            max_batch_size: 1,
            max_batch_wait: Duration::ZERO,
            ..ServiceOptions::default()
        };
        let (service, batches) = echo(options, Duration::from_millis(100)).await;
        let busy = {
            let service = service.clone();
            tokio::spawn(async move { service.predict(vec!["a".into(), "b".into()]).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let err = service
            .predict_within(vec!["late".into()], Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(err.to_string().contains("0 of its 1 texts run"), "{err}");
        busy.await.unwrap().unwrap();
        assert_eq!(service.metrics().timeouts.get(), 1);
        let ran: usize = batches.lock().unwrap().iter().sum();
        assert_eq!(ran, 2, "the late text never ran");
    }

    #[tokio::test]
    async fn a_large_request_is_tokenized_off_the_runtime_and_answered_in_order() {
        let (service, _) = echo(ServiceOptions::default(), Duration::ZERO).await;
        // 40 texts of 1-2 KB: over the inline limit, so tokenized on a blocking thread.
        let texts: Vec<String> = (0..40).map(|i| "y".repeat(1000 + i * 25)).collect();
        assert!(texts.iter().map(String::len).sum::<usize>() > INLINE_TOKENIZE_BYTES);
        let answers = service.predict(texts.clone()).await.unwrap();
        let lengths: Vec<f32> = answers
            .iter()
            .map(|answer| match answer {
                Prediction::Embedding(v) => v[0],
                other => panic!("an embedding, not {other:?}"),
            })
            .collect();
        let expected: Vec<f32> = texts.iter().map(|t| t.len() as f32).collect();
        assert_eq!(lengths, expected);
    }

    #[tokio::test]
    async fn a_full_queue_is_an_immediate_overload_error() {
        let options = ServiceOptions {
            max_batch_size: 1,
            max_batch_wait: Duration::ZERO,
            queue_capacity: 2,
            ..ServiceOptions::default()
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
            so1s_core::metrics::render(&registry)
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
