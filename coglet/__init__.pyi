from coglet import _sdk as _sdk

__version__: str

class BuildInfo:
    @property
    def version(self) -> str: ...
    @property
    def git_sha(self) -> str: ...
    @property
    def dirty(self) -> bool: ...
    @property
    def build_time(self) -> str: ...
    @property
    def rustc_version(self) -> str: ...

class Server:
    @property
    def active(self) -> bool: ...
    def serve(
        self,
        predictor_ref: str | None = None,
        host: str = "0.0.0.0",
        port: int | None = 5000,
        await_explicit_shutdown: bool = False,
        is_train: bool = False,
        output_temp_dir_base: str = "/tmp/coglet/output",
        upload_url: str | None = None,
        redis_url: str | None = None,
        input_queue: str | None = None,
        consumer_id: str | None = None,
        report_setup_run_url: str | None = None,
        predict_timeout: float = 0.0,
        max_failure_count: int = -1,
    ) -> None:
        """Serves predictor_ref over HTTP; with redis_url, takes predictions from the Redis
        Stream input_queue as consumer consumer_id instead (pull mode, docs/queue.md), and
        opens the HTTP port only when port is given (not None). predict_timeout (seconds, 0 =
        none) fails a queued prediction that runs longer; max_failure_count (-1 = never)
        exits after more than that many failed predictions in a row; report_setup_run_url
        receives one POST when setup ends. Environment: COGLET_QUEUE_LEASE (30 s),
        COGLET_QUEUE_IDLE_TIMEOUT (10 s)."""
    def _run_worker(self) -> None: ...

class CancelationException(BaseException): ...

__build__: BuildInfo
server: Server

def serve(
    predictor_ref: str | None = None,
    host: str = "0.0.0.0",
    port: int | None = 5000,
    await_explicit_shutdown: bool = False,
    is_train: bool = False,
    output_temp_dir_base: str = "/tmp/coglet/output",
    upload_url: str | None = None,
    redis_url: str | None = None,
    input_queue: str | None = None,
    consumer_id: str | None = None,
    report_setup_run_url: str | None = None,
    predict_timeout: float = 0.0,
    max_failure_count: int = -1,
) -> None: ...

__all__ = ["__version__", "__build__", "server", "CancelationException"]
