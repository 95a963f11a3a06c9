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
        port: int = 5000,
        await_explicit_shutdown: bool = False,
        is_train: bool = False,
        output_temp_dir_base: str = "/tmp/coglet/output",
        upload_url: str | None = None,
    ) -> None: ...
    def _run_worker(self) -> None: ...

class CancelationException(BaseException): ...

__build__: BuildInfo
server: Server

def serve(
    predictor_ref: str | None = None,
    host: str = "0.0.0.0",
    port: int = 5000,
    await_explicit_shutdown: bool = False,
    is_train: bool = False,
    output_temp_dir_base: str = "/tmp/coglet/output",
    upload_url: str | None = None,
) -> None: ...

__all__ = ["__version__", "__build__", "server", "CancelationException"]
