# Type stubs of the Rust extension nade._nade (python/src/lib.rs). Users call the package
# (nade/__init__.py), which checks and converts numpy arrays; this layer takes and returns
# row-major bytes with their shapes.
from os import PathLike
from typing import List, Optional, Tuple, Union

_Path = Union[str, PathLike[str]]

__version__: str

class Checkpoint:
    def __init__(self, path: _Path, device: str = "auto", threads: Optional[int] = None) -> None: ...
    @property
    def kind(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def config_json(self) -> str: ...
    @property
    def num_parameters(self) -> int: ...
    @property
    def describe(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def path(self) -> str: ...
    def log_prob(
        self, x: bytes, rows: int, masks: Optional[int] = None, orders: Optional[int] = None
    ) -> bytearray: ...
    def nll(
        self, x: bytes, rows: int, masks: Optional[int] = None, orders: Optional[int] = None
    ) -> Tuple[float, float]: ...
    def conditionals(self, x: bytes, rows: int) -> bytearray: ...
    def sample(self, count: int, seed: int = 0, order: str = "stored") -> bytearray: ...
    def complete(
        self,
        x: bytes,
        rows: int,
        mask: bytes,
        samples: int = 1,
        seed: int = 0,
        order: Optional[str] = None,
    ) -> bytearray: ...
    def log_prob_kept(
        self, x: bytes, rows: int, mask: bytes
    ) -> Optional[Tuple[bytearray, bytearray, int]]: ...

def keep_masks(
    spec: str, rows: int, n: int, seed: int = 0, shape: Optional[Tuple[int, int]] = None
) -> bytearray: ...
def read_amat(path: _Path) -> Tuple[bytearray, int, int]: ...
def write_amat(path: _Path, x: bytes, rows: int, n: int) -> None: ...
def save_grid(
    path: _Path,
    values: bytes,
    rows: int,
    n: int,
    probs: bool = False,
    scale: int = 2,
    shape: Optional[Tuple[int, int]] = None,
    columns: Optional[int] = None,
) -> None: ...
def train(
    config: Optional[str],
    is_path: bool,
    resume: Optional[_Path] = None,
    resume_here: bool = False,
    data: Optional[_Path] = None,
    dataset: Optional[str] = None,
    out: Optional[_Path] = None,
    epochs: Optional[int] = None,
    seed: Optional[int] = None,
    device: Optional[str] = None,
    progress: bool = True,
    test: bool = True,
    force: bool = False,
) -> str: ...
def features() -> List[str]: ...
