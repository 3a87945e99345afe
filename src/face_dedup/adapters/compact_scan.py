"""A compact int8 copy of an embedded index partition, scanned before the float32 matrix, with a
proven margin so that a threshold search loses nothing.

Why: one exact threshold search reads every float32 vector (512 MB per million 128-d faces);
memory bandwidth, not arithmetic, sets its time. The int8 copy is a quarter of the bytes and
onnxruntime's integer matrix product (MLAS, VNNI where the CPU has it) scans it with exact
int32 sums. Every row whose compact score could reach the threshold is then rescored in
float32, so the answer is the float32 scan's answer.

The margin (derived, not fitted). Stored vectors x are unit length (|‖x‖ - 1| <= 1e-3, checked
on add and load). Each is coded with the fixed step s = 1/256: c = round(x / s). Because s is a
power of two, x / s and s * c are exact in float32, so each component's error is at most s / 2.
A vector with any |x_i| > 127 s cannot be coded in int8 without clipping; it is an *outlier*,
kept in a list that every compact search rescores outright. For the others the error
e_x = x - s c has ‖e_x‖ <= `err_max`, the largest such norm stored so far (computed exactly,
never lowered on removal, so always an upper bound; at most sqrt(d) s / 2 = 0.022 at d = 128).
The query q is coded per query, c_q = round(q / s_q) with s_q = max|q_i| / 127, and its error
e_q = q - s_q c_q is measured in float64. Then

    q.x - s s_q (c_q . c_x) = e_q.x + q.e_x - e_q.e_x

so |q.x - compact| <= ‖e_q‖ ‖x‖ + ‖q‖ err_max + ‖e_q‖ err_max  (Cauchy-Schwarz, ‖x‖ <= 1.001).
The float32 rescoring itself differs from the real dot product by at most d * 2^-24 * ‖q‖ ‖x‖
(under 1e-5 ‖q‖ at d = 128); the slack, `_SLACK` (1e-4) times max(1, ‖q‖), covers that and the
float64 threshold arithmetic (an absolute 1e-4 did not: a query of norm 1e4 lost rows whose
coding error met the bound). A row is rescored when compact >= threshold - margin - slack, i.e.
when its int32 sum reaches floor((threshold - margin - slack) / (s s_q)): no row whose float32
score is >= threshold is missed. tests/unit/test_vector_index_no_loss.py places vectors just
above and below it.

The kernel (sealed blocks). `MatMulInteger` is not bandwidth-bound here (MLAS packs the rows on
every call: 13 ms at 1M). Full blocks of `BLOCK_ROWS` rows are therefore handed, once, to
onnxruntime's com.microsoft `MatMulNBits` (the LLM-decoding GEMV kernel) as its constant,
prepacked weight: 8 bits, one quantisation block per row (block_size = d), scale s = 1/256 and
zero point 128 per row, so its dequantised weight is exactly s c_x; accuracy_level 4 makes it
compute in int8 (VNNI). It quantises its float input itself, per block, with scale max|a| / 127.
We feed it the pre-quantised query q' = s_q c_q in float32, s_q itself a float32 value
(`quantise_query`): max|q'| = 127 s_q (to one rounding), so the kernel's scale is s_q and its
codes are c_q again (each q'_i / s_q is within 127 * 2^-23 < 2e-5 of c_i), its int32 sums are
c_q . c_x exactly, and its only error is the float32 rounding of the scaled output:
|output - s s_q (c_q . c_x)| <= `_KERNEL_TOL` (1e-5; measured 2e-7 over 20 queries x 1M rows). A row is
rescored when output >= threshold - margin - slack - `_KERNEL_TOL` max(1, ‖q‖) (the rounding
scales with the output, so with the query), which keeps the guarantee.
That relies on the kernel computing what it documents, so it is checked, not trusted: every
block session, when built, scores its own rows for four fixed queries and is compared with the
exact integer sums; a difference over `_KERNEL_TOL` (another CPU, another onnxruntime build, a
kernel that quantises differently) turns the blocks off for good in this process (logged once,
numbers only) and `MatMulInteger` scans everything, as before. Rows after the last full block
(the tail) are scanned with `MatMulInteger`. A row that changes inside a sealed block (an update;
a delete moving the last row into its hole) no longer matches the block's snapshot: it is kept
in the block's dirty set and rescored outright until a background thread rebuilds the block
(searches never wait for a build; they use what is built).

The builder thread and processes. A fork waits until the builder is outside onnxruntime and
no copy's lock is held (`os.register_at_fork`): a child forked mid-build inherited a lock or an
onnxruntime import held by a thread it does not have, and blocked for good; the child then
starts its own builder when it next needs one. At interpreter exit the builder is stopped and
joined (a daemon thread inside onnxruntime while the process tore it down aborted it now and
then: exit status 134). A closed or reloaded index stops its copies' builders (`stop`).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import weakref
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

COMPACT_FROM = 20_000  # below this a float32 scan takes well under a millisecond: not worth it
_SCALE = 256.0  # 1 / s; a power of two, so scaling is exact in float32
_LIMIT = 127  # |code| <= 127: one int8, symmetric
_NORM_MAX = 1.001  # stored vectors are unit length within 1e-3 (the index refuses others)
_SLACK = 1e-4  # float32 rounding of the rescoring (< 1e-5 at d = 128) and of the threshold
_FALLBACK_SHARE = 16  # more than 1/16 of the rows near the threshold: a float32 scan is cheaper
BLOCK_ROWS = 65_536  # rows per sealed MatMulNBits block (BENCHMARKS.md: 64k and 128k measured)

_session_lock = threading.Lock()
_session: object | None = None


def _scanner() -> object:
    """One onnxruntime session computing int32 sums (rows as uint8 with zero point 128, i.e. the
    int8 codes, times one query column, also uint8 with zero point 128), one thread: a search
    uses one core.

    Both sides uint8, not an int8 query: MLAS's uint8 x int8 kernel on x86 CPUs with AVX2 but
    no VNNI (AMD Zen 2/3, Intel before Cascade Lake / Alder Lake) adds lane pairs with
    `vpmaddubsw`, which saturates at 16 bits: under `qemu-x86_64 -cpu Haswell` a query with
    equal components got wrong sums on every row (off by up to 155,790), and rows above the
    threshold were lost. uint8 x uint8 widens to 16 bits first (exact everywhere; the same
    0.77 ms per 65k rows here)."""
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort
            from onnx import TensorProto, helper

            graph = helper.make_graph(
                [helper.make_node("MatMulInteger", ["rows", "query", "zero", "zero"], ["sums"])],
                "compact_scan",
                [
                    helper.make_tensor_value_info("rows", TensorProto.UINT8, [None, None]),
                    helper.make_tensor_value_info("query", TensorProto.UINT8, [None, 1]),
                ],
                [helper.make_tensor_value_info("sums", TensorProto.INT32, [None, 1])],
                initializer=[helper.make_tensor("zero", TensorProto.UINT8, [], [128])],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            _session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        return _session


_products_lock = threading.Lock()
_products: object | None = None


def code_products(left: NDArray[np.uint8], right_t: NDArray[np.uint8]) -> NDArray[np.int32]:
    """Exact int32 products of codes (both as int8 + 128): left (m x d) times right_t (d x n),
    on every core (bulk import's self-join: about 4x less CPU than a float32 product here)."""
    global _products
    with _products_lock:
        if _products is None:
            import onnxruntime as ort
            from onnx import TensorProto, helper

            graph = helper.make_graph(
                [helper.make_node("MatMulInteger", ["left", "right", "zero", "zero"], ["products"])],
                "code_products",
                [
                    helper.make_tensor_value_info("left", TensorProto.UINT8, [None, None]),
                    helper.make_tensor_value_info("right", TensorProto.UINT8, [None, None]),
                ],
                [helper.make_tensor_value_info("products", TensorProto.INT32, [None, None])],
                initializer=[helper.make_tensor("zero", TensorProto.UINT8, [], [128])],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 1
            _products = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
    products: NDArray[np.int32] = _products.run(None, {"left": left, "right": right_t})[0]  # type: ignore[union-attr]
    return products


def pair_margin(err_max: float) -> float:
    """Bound on |x.y - s^2 (c_x . c_y)| for two stored inlier vectors (module doc, with both
    sides coded at the fixed step: each error norm <= err_max, each norm <= 1.001)."""
    return 2 * _NORM_MAX * err_max + err_max * err_max


def pair_floor(threshold: float, err_max: float) -> int:
    """The int32 code product a pair of inliers needs to possibly score `threshold`."""
    return math.floor((threshold - pair_margin(err_max) - _SLACK) * _SCALE * _SCALE)


def encode(rows: NDArray[np.float32]) -> tuple[NDArray[np.uint8], NDArray[np.bool_], float]:
    """Codes (int8 + 128, as uint8), which rows are outliers, and the largest coding error norm
    of the others (exact, in float64)."""
    scaled = np.asarray(rows, dtype=np.float32) * np.float32(_SCALE)  # exact: power of two
    norms = np.linalg.norm(scaled.astype(np.float64), axis=1) / _SCALE
    # The margin assumes |‖x‖ - 1| <= 1e-3: a row that is not (bytes that rotted, another
    # process's change read by refresh(), which does not check norms; NaN) is rescored outright.
    outlier = np.any(~(np.abs(scaled) <= _LIMIT), axis=1) | ~(np.abs(norms - 1.0) <= _NORM_MAX - 1.0)
    codes = np.clip(np.rint(np.where(outlier[:, None], np.float32(0), scaled)), -_LIMIT, _LIMIT)
    errors = np.linalg.norm((scaled.astype(np.float64) - codes) / _SCALE, axis=1)
    inliers = errors[~outlier]
    err_max = float(inliers.max()) if len(inliers) else 0.0
    return (codes + 128).astype(np.uint8), outlier, err_max


_NBITS_SCALE = 1.0 / _SCALE  # MatMulNBits dequantises (code - 128) * scale: exactly s * c_x
_KERNEL_TOL = 1e-5  # accepted |MatMulNBits output - s s_q (c_q . c_x)|: float32 output rounding
_DIRTY_SHARE = 256  # a sealed block with more than 1/256 of its rows changed is rebuilt

_nbits_lock = threading.Lock()
_nbits_broken = False  # set for good when a block session disagreed with the exact sums


def nbits_usable(dim: int) -> bool:
    """MatMulNBits takes one scale per row only when the row is one quantisation block: a power
    of two from 16 to 256 (the default pack's 128 is one); and not after a failed check."""
    return not _nbits_broken and dim in (16, 32, 64, 128, 256)


def _nbits_session(codes: NDArray[np.uint8]) -> tuple[object, list[object]]:
    """onnxruntime's com.microsoft MatMulNBits (the LLM-decoding GEMV kernel: 8-bit weights,
    accuracy_level 4 = int8 compute, VNNI where the CPU has it) with `codes` as its constant,
    prepacked weight B: one row = one block of `dim` codes, scale 1/256, zero point 128, so
    dequant(B) is exactly s * c_x. The query goes in as float32 (pre-quantised: module doc).

    The weights are handed over as OrtValues over our own arrays, not serialised into the model
    (which would cost a parsed copy besides the packed one): onnxruntime requires them to
    outlive the session, so they are returned with it, for the caller to keep."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rows, dim = codes.shape
    weights: dict[str, NDArray[Any]] = {  # handed over as OrtValues, not serialised: no extra copy
        "codes": codes.reshape(rows, 1, dim),
        "scales": np.full(rows, _NBITS_SCALE, dtype=np.float32),
        "zero": np.full(rows, 128, dtype=np.uint8),
    }
    placeholders = []
    for name, array in weights.items():
        tensor = helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, [])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", f"{name}.bin"), ("offset", "0"), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        placeholders.append(tensor)
    graph = helper.make_graph(
        [
            helper.make_node(
                "MatMulNBits",
                ["query", "codes", "scales", "zero"],
                ["scores"],
                domain="com.microsoft",
                K=dim,
                N=rows,
                bits=8,
                block_size=dim,
                accuracy_level=4,  # int8 compute; 0 (float32 compute) is ~60x slower here
            )
        ],
        "compact_block",
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, rows])],
        initializer=placeholders,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a search uses one core
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # the arena grows in doubling chunks: memory for nothing
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in weights.values()]
    options.add_external_initializers(list(weights), values)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [*values, *weights.values()]


def _check_queries(dim: int) -> list[NDArray[np.float32]]:
    """Fixed queries for the kernel check: a spread-out one and one with a dominant component
    (a large and a small query scale), and every component at +127, then at -127: the largest
    input in every lane, so that a kernel whose 16-bit pair sums can saturate (AVX2's
    `vpmaddubsw`, as some int8 kernels use it) does so on every row of the block where any
    query could make it."""
    spread = np.random.default_rng(12).standard_normal(dim)
    spike = spread * 0.05
    spike[dim // 3] = 1.0
    return [(v / np.linalg.norm(v)).astype(np.float32) for v in (spread, spike, np.ones(dim), -np.ones(dim))]


def _kernel_agrees(session: object, codes: NDArray[np.uint8], skip: NDArray[np.bool_]) -> float:
    """The largest |kernel output - s s_q (c_q . c_x)| over the check queries and the rows not
    in `skip`, the exact sums in integers (|sum| <= 127^2 d: exact in int32 up to d = 256)."""
    worst = 0.0
    for query in _check_queries(codes.shape[1]):
        q_codes, step = quantise_query(query)
        sums = np.concatenate(  # in slices: bounded temporaries
            [
                (part.astype(np.int32) - 128) @ q_codes.astype(np.int32)
                for part in np.split(codes, range(8192, len(codes), 8192))
            ]
        )
        exact = sums.astype(np.float64) * step / _SCALE
        fed = (q_codes.astype(np.float32) * np.float32(step)).reshape(1, -1)
        out = session.run(None, {"query": fed})[0].reshape(-1)  # type: ignore[attr-defined]
        worst = max(worst, float(np.abs(out.astype(np.float64) - exact)[~skip].max(initial=0.0)))
    return worst


def _give_up_nbits(difference: float) -> None:
    global _nbits_broken
    with _nbits_lock:
        if not _nbits_broken:
            log.warning(
                "onnxruntime's MatMulNBits differs from the exact integer sums by %.3g (> %g) on this "
                "machine: the compact scan uses MatMulInteger from now on",
                difference,
                _KERNEL_TOL,
            )
        _nbits_broken = True


def quantise_query(query: NDArray[np.float32]) -> tuple[NDArray[np.int8], float]:
    """c_q and s_q (module doc). s_q is a float32 value, so the query fed to MatMulNBits,
    s_q * c_q in float32, is re-quantised by the kernel to the same c_q and (within rounding) s_q."""
    q = np.asarray(query, dtype=np.float64)
    peak = float(np.abs(q).max())
    step = float(np.float32(peak / _LIMIT))
    if not step > 0:  # a zero query, or one so small that its step underflows float32
        step = 1.0
    codes = np.clip(np.rint(q / step), -_LIMIT, _LIMIT)
    return codes.astype(np.int8), step


class _Block:
    """A sealed block: a MatMulNBits session over a snapshot of its rows' codes, and the rows
    whose codes changed since (their snapshot score means nothing: always rescored)."""

    def __init__(
        self, session: object, dirty: set[int], weights: list[object], base: NDArray[np.uint8]
    ) -> None:
        self.session = session
        self.dirty = dirty
        self.weights = weights  # what the session was built over: onnxruntime needs it alive
        self.base = base  # the codes array those weights are a view of


class CompactCopy:
    """int8 codes row for row with a partition's float32 matrix (same row numbers).

    Rows [0, len(blocks) * block_rows) are sealed: each full block of `block_rows` rows is
    scanned by its own MatMulNBits session (built off the search path, by one background
    thread); the rows after them (the tail) by MatMulInteger over `codes`. A row that changes
    in a sealed block (an update, or a delete moving the last row into its hole) is marked
    dirty and rescored outright until the block is rebuilt."""

    def __init__(self, dim: int, block_rows: int = BLOCK_ROWS) -> None:
        self.dim = dim
        self.block_rows = block_rows
        self.codes: NDArray[np.uint8] = np.empty((0, dim), dtype=np.uint8)
        self.outlier: NDArray[np.bool_] = np.empty(0, dtype=np.bool_)
        self.err_max = 0.0  # an upper bound of every inlier row's coding error norm
        self.size = 0  # rows in use
        self.blocks: list[_Block] = []
        self._lock = threading.Lock()  # blocks, and the codes a build snapshots
        self._generation = 0  # a reload discards a build started before it
        self._building: tuple[int, set[int]] | None = None  # block, rows changed since its snapshot
        self._builder: threading.Thread | None = None
        self._stopped = False  # closed, reloaded or exiting: build nothing more
        with _copies_lock:
            _copies.add(self)

    def load(self, matrix: NDArray[np.float32]) -> None:
        with self._lock:
            self.codes = np.empty((len(matrix), self.dim), dtype=np.uint8)
            self.outlier = np.empty(len(matrix), dtype=np.bool_)
            self.err_max = 0.0
            for start in range(0, len(matrix), 65_536):  # bounded temporaries (1M rows: 5 s of reopen)
                stop = start + 65_536
                self.codes[start:stop], self.outlier[start:stop], err = encode(matrix[start:stop])
                self.err_max = max(self.err_max, err)
            self.size = len(matrix)
            self.blocks = []
            self._generation += 1
            self._building = None
            self._kick()

    def grow(self, capacity: int, used: int) -> None:
        with self._lock:
            codes = np.full((capacity, self.dim), 128, dtype=np.uint8)
            codes[:used] = self.codes[:used]
            outlier = np.zeros(capacity, dtype=np.bool_)
            outlier[:used] = self.outlier[:used]
            self.codes, self.outlier = codes, outlier

    def set_row(self, row: int, vector: NDArray[np.float32]) -> None:
        codes, outlier, err = encode(vector.reshape(1, -1))
        with self._lock:
            self.codes[row] = codes[0]
            self.outlier[row] = outlier[0]
            self.err_max = max(self.err_max, err)
            self.size = max(self.size, row + 1)
            self._changed(row)
            self._kick()

    def remove_row(self, row: int, last: int) -> None:
        """The partition moved its last row into `row` (unless they are the same) and shrank."""
        with self._lock:
            if row != last:
                self.codes[row] = self.codes[last]
                self.outlier[row] = self.outlier[last]
                self._changed(row)
            self.outlier[last] = False
            self.size = last
            # blocks wholly past the end are dropped; rows past the end of the last one are
            # never returned (rows_near keeps rows < size) and are dirty when filled again
            while self.blocks and (len(self.blocks) - 1) * self.block_rows >= self.size:
                self.blocks.pop()
            self._kick()

    def _changed(self, row: int) -> None:
        block = row // self.block_rows
        if block < len(self.blocks):
            self.blocks[block].dirty.add(row)
        if self._building is not None and self._building[0] == block:
            self._building[1].add(row)

    def stop(self) -> None:
        """Build no more blocks (the copy is being discarded); a build under way ends on its own."""
        with self._lock:
            self._stopped = True

    def _next_build(self) -> int | None:
        """The block to build next (under the lock): a full unsealed one, else the most changed."""
        if self._stopped or not nbits_usable(self.dim):
            return None
        sealed = len(self.blocks)
        if (sealed + 1) * self.block_rows <= self.size:
            return sealed
        worst = max(range(sealed), key=lambda b: len(self.blocks[b].dirty), default=None)
        if worst is not None and len(self.blocks[worst].dirty) * _DIRTY_SHARE > self.block_rows:
            return worst
        # after a `grow`, a block built before it keeps the old codes array alive: rebuild it
        return next((b for b in range(sealed) if self.blocks[b].base is not self.codes), None)

    def _kick(self) -> None:
        """Start the builder thread if there is work and none runs (under the lock)."""
        if self._builder is None and self._next_build() is not None:
            import onnx  # noqa: F401 - imported here, not by the thread: a fork meanwhile would
            import onnxruntime  # noqa: F401 - leave the child's import lock held for good

            self._builder = threading.Thread(target=self._build_blocks, name="compact-blocks", daemon=True)
            self._builder.start()

    def _build_blocks(self) -> None:
        try:
            self._build_loop()
        finally:  # whatever ended it (an error, too): a later change may start another
            with self._lock:
                if self._builder is threading.current_thread():
                    self._builder, self._building = None, None

    def _build_loop(self) -> None:
        while True:
            with self._lock:
                block = self._next_build()
                if block is None:
                    self._builder = None
                    return
                start = block * self.block_rows
                # A view, not a copy (the packed copy is the only other one). Rows written while
                # onnxruntime packs it are recorded in _building and stay dirty in the new block.
                # After a `grow` the view keeps the old array alive until the block is rebuilt
                # (`_next_build` then rebuilds it).
                base = self.codes
                rows = base[start : start + self.block_rows]
                generation = self._generation
                self._building = (block, set())
            with _fork_guard:  # no fork while inside onnxruntime (module doc)
                try:
                    session, weights = _nbits_session(rows)
                except Exception:  # an onnxruntime without the kernel: MatMulInteger as before
                    log.warning(
                        "onnxruntime's MatMulNBits is unavailable: the compact scan uses MatMulInteger"
                    )
                    session, weights = None, []
                with self._lock:  # what was packed, but for rows changed meanwhile (skipped)
                    changed = set(self._building[1]) if self._building is not None else set()
                    packed = rows.copy()
                skip = np.zeros(len(packed), dtype=np.bool_)
                skip[[row - start for row in changed]] = True
                difference = math.inf if session is None else _kernel_agrees(session, packed, skip)
                del packed
                if difference > _KERNEL_TOL:
                    _give_up_nbits(difference)
            with self._lock:
                building, self._building = self._building, None
                if difference > _KERNEL_TOL:
                    self.blocks = []
                    continue  # _next_build now says None
                if generation != self._generation or building is None:
                    continue
                if block < len(self.blocks):
                    self.blocks[block] = _Block(session, building[1], weights, base)
                elif block == len(self.blocks) and (block + 1) * self.block_rows <= self.size:
                    self.blocks.append(_Block(session, building[1], weights, base))
                # else the partition shrank meanwhile: the snapshot is stale, dropped

    def settle(self) -> None:
        """Wait until no block is being built (tests, benchmarks)."""
        while True:
            with self._lock:
                self._kick()  # e.g. in a forked child, whose builder thread stayed in the parent
                builder = self._builder
            if builder is None:
                return
            builder.join()

    def margin(self, query: NDArray[np.float32]) -> tuple[NDArray[np.int8], float, float]:
        """The query's codes, its scale s_q and the bound on |q.x - compact score| (module doc)."""
        q = np.asarray(query, dtype=np.float64)
        codes, step = quantise_query(query)
        q_err = float(np.linalg.norm(q - step * codes.astype(np.float64)))
        q_norm = float(np.linalg.norm(q))
        bound = q_err * _NORM_MAX + q_norm * self.err_max + q_err * self.err_max
        return codes, step, bound

    def rows_near(self, query: NDArray[np.float32], min_score: float, size: int) -> NDArray[np.intp] | None:
        """Rows (ascending) among the first `size` whose float32 score can be >= `min_score`;
        None when so many qualify that a float32 scan is the cheaper way."""
        codes, step, bound = self.margin(query)
        # float32 rounding (of the rescoring, of the kernel's output) grows with the query
        scale = max(1.0, float(np.linalg.norm(np.asarray(query, dtype=np.float64))))
        lowest = min_score - bound - _SLACK * scale  # the compact score a row needs to be rescored
        with self._lock:
            self._kick()  # e.g. in a forked child, whose builder thread stayed in the parent
            blocks = self.blocks if nbits_usable(self.dim) else []
            found: list[NDArray[np.intp]] = []
            if blocks:
                fed = (codes.astype(np.float32) * np.float32(step)).reshape(1, -1)
                for number, block in enumerate(blocks):
                    scores = block.session.run(None, {"query": fed})[0].reshape(-1)  # type: ignore[attr-defined]
                    hits = np.flatnonzero(scores >= lowest - _KERNEL_TOL * scale)
                    found.append(hits + number * self.block_rows)
                    if block.dirty:
                        found.append(np.fromiter(block.dirty, dtype=np.intp, count=len(block.dirty)))
            tail = min(len(blocks) * self.block_rows, size)
            if tail < size:
                floor = math.floor(lowest * _SCALE / step)
                shifted = (codes.astype(np.int16) + 128).astype(np.uint8).reshape(-1, 1)  # _scanner's doc
                sums = _scanner().run(None, {"rows": self.codes[tail:size], "query": shifted})[0]  # type: ignore[attr-defined]
                found.append(np.flatnonzero(sums.reshape(-1) >= floor) + tail)
            outliers = self.outlier[:size]
            if outliers.any():
                found.append(np.flatnonzero(outliers))
        near = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.intp)
        near = near[near < size]
        if len(near) * _FALLBACK_SHARE > size:
            return None
        return near


# Every live copy, for the fork and exit hooks below (weak: a dropped index is not kept alive).
_copies: weakref.WeakSet[CompactCopy] = weakref.WeakSet()
_copies_lock = threading.Lock()
_fork_guard = threading.Lock()  # held by the builder while inside onnxruntime
_held: list[threading.Lock] = []  # what _before_fork took, in order


def _before_fork() -> None:
    """Take every lock the builder or a search may hold (the order they are taken in
    elsewhere), so that the child starts with none held by a thread it does not have."""
    _fork_guard.acquire()
    _copies_lock.acquire()
    taken = [copy._lock for copy in list(_copies)]
    for lock in [*taken, _session_lock, _products_lock, _nbits_lock]:
        lock.acquire()
    _held[:] = [_fork_guard, _copies_lock, *taken, _session_lock, _products_lock, _nbits_lock]


def _after_fork_in_parent() -> None:
    for lock in reversed(_held):
        lock.release()
    _held.clear()


def _after_fork_in_child() -> None:
    for copy in list(_copies):  # the builder thread is not in this process: a new one when needed
        copy._builder, copy._building = None, None
    _after_fork_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


@atexit.register
def _stop_builders() -> None:
    """Stop every builder and wait for the block under way (interpreter exit: module doc)."""
    with _copies_lock:
        copies = list(_copies)
    for copy in copies:
        copy.stop()
        with copy._lock:
            builder = copy._builder
        if builder is not None:
            builder.join()
