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
(under 1e-5 at d = 128); `_SLACK` (1e-4) covers that and the float64 threshold arithmetic. A row
is rescored when compact >= threshold - margin - slack, i.e. when its int32 sum reaches
floor((threshold - margin - slack) / (s s_q)): no row whose float32 score is >= threshold is
missed. tests/unit/test_vector_index_no_loss.py places vectors just above and below it.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
from numpy.typing import NDArray

COMPACT_FROM = 20_000  # below this a float32 scan takes well under a millisecond: not worth it
_SCALE = 256.0  # 1 / s; a power of two, so scaling is exact in float32
_LIMIT = 127  # |code| <= 127: one int8, symmetric
_NORM_MAX = 1.001  # stored vectors are unit length within 1e-3 (the index refuses others)
_SLACK = 1e-4  # float32 rounding of the rescoring (< 1e-5 at d = 128) and of the threshold
_FALLBACK_SHARE = 16  # more than 1/16 of the rows near the threshold: a float32 scan is cheaper

_session_lock = threading.Lock()
_session: object | None = None


def _scanner() -> object:
    """One onnxruntime session computing int32 sums (rows as uint8 with zero point 128, i.e. the
    int8 codes, times one int8 query column), one thread: a search uses one core."""
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort
            from onnx import TensorProto, helper

            graph = helper.make_graph(
                [helper.make_node("MatMulInteger", ["rows", "query", "zero"], ["sums"])],
                "compact_scan",
                [
                    helper.make_tensor_value_info("rows", TensorProto.UINT8, [None, None]),
                    helper.make_tensor_value_info("query", TensorProto.INT8, [None, 1]),
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
    outlier = np.any(np.abs(scaled) > _LIMIT, axis=1)
    codes = np.clip(np.rint(scaled), -_LIMIT, _LIMIT)
    errors = np.linalg.norm((scaled.astype(np.float64) - codes) / _SCALE, axis=1)
    inliers = errors[~outlier]
    err_max = float(inliers.max()) if len(inliers) else 0.0
    return (codes + 128).astype(np.uint8), outlier, err_max


class CompactCopy:
    """int8 codes row for row with a partition's float32 matrix (same row numbers)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.codes: NDArray[np.uint8] = np.empty((0, dim), dtype=np.uint8)
        self.outlier: NDArray[np.bool_] = np.empty(0, dtype=np.bool_)
        self.err_max = 0.0  # an upper bound of every inlier row's coding error norm

    def load(self, matrix: NDArray[np.float32]) -> None:
        self.codes = np.empty((len(matrix), self.dim), dtype=np.uint8)
        self.outlier = np.empty(len(matrix), dtype=np.bool_)
        self.err_max = 0.0
        for start in range(0, len(matrix), 65_536):  # bounded temporaries (1M rows: 5 s of reopen)
            stop = start + 65_536
            self.codes[start:stop], self.outlier[start:stop], err = encode(matrix[start:stop])
            self.err_max = max(self.err_max, err)

    def grow(self, capacity: int, used: int) -> None:
        codes = np.full((capacity, self.dim), 128, dtype=np.uint8)
        codes[:used] = self.codes[:used]
        outlier = np.zeros(capacity, dtype=np.bool_)
        outlier[:used] = self.outlier[:used]
        self.codes, self.outlier = codes, outlier

    def set_row(self, row: int, vector: NDArray[np.float32]) -> None:
        codes, outlier, err = encode(vector.reshape(1, -1))
        self.codes[row] = codes[0]
        self.outlier[row] = outlier[0]
        self.err_max = max(self.err_max, err)

    def move_row(self, source: int, target: int) -> None:
        self.codes[target] = self.codes[source]
        self.outlier[target] = self.outlier[source]
        self.outlier[source] = False

    def margin(self, query: NDArray[np.float32]) -> tuple[NDArray[np.int8], float, float]:
        """The query's codes, its scale s_q and the bound on |q.x - compact score| (module doc)."""
        q = np.asarray(query, dtype=np.float64)
        peak = float(np.abs(q).max())
        step = peak / _LIMIT if peak > 0 else 1.0
        codes = np.clip(np.rint(q / step), -_LIMIT, _LIMIT)
        q_err = float(np.linalg.norm(q - step * codes))
        q_norm = float(np.linalg.norm(q))
        bound = q_err * _NORM_MAX + q_norm * self.err_max + q_err * self.err_max
        return codes.astype(np.int8), step, bound

    def rows_near(self, query: NDArray[np.float32], min_score: float, size: int) -> NDArray[np.intp] | None:
        """Rows (ascending) among the first `size` whose float32 score can be >= `min_score`;
        None when so many qualify that a float32 scan is the cheaper way."""
        codes, step, bound = self.margin(query)
        floor = math.floor((min_score - bound - _SLACK) * _SCALE / step)
        sums = _scanner().run(None, {"rows": self.codes[:size], "query": codes.reshape(-1, 1)})[0]  # type: ignore[attr-defined]
        near: NDArray[np.intp] = np.flatnonzero(sums.reshape(-1) >= floor)
        if self.outlier[:size].any():
            near = np.union1d(near, np.flatnonzero(self.outlier[:size]))
        if len(near) * _FALLBACK_SHARE > size:
            return None
        return near
