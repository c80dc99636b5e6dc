"""What is inside a .tflite file: its ops, tensor types and input/output quantization.

Read from the flatbuffer itself (not from an interpreter, whose XNNPACK delegate replaces ops with
DELEGATE nodes), so the list is what any runtime receives. An op "runs in float" when any of its
input or output tensors is a float type: a float layer, a hybrid (float activations, int8
weights) layer, or a QUANTIZE/DEQUANTIZE boundary around one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


@dataclass(frozen=True)
class TensorIO:
    """An input or output tensor and how to (de)quantize it: real = (q - zero_point) * scale."""

    name: str
    shape: list[int]
    dtype: str  # numpy-style lower case: uint8, int8, float32
    scale: float | None
    zero_point: int | None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    input_types: list[str]
    output_types: list[str]
    output_name: str

    @property
    def is_float(self) -> bool:
        return bool(FLOAT_TYPES & set(self.input_types + self.output_types))


@dataclass
class ModelInspection:
    ops: list[OpInfo]
    tensor_types: dict[str, int]
    inputs: list[TensorIO]
    outputs: list[TensorIO]
    subgraphs: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.ops).most_common())

    @property
    def float_ops(self) -> list[OpInfo]:
        return [op for op in self.ops if op.is_float]

    @property
    def integer_only(self) -> bool:
        io_float = any(t.dtype.upper() in FLOAT_TYPES for t in self.inputs + self.outputs)
        return not self.float_ops and not io_float

    def float_summary(self) -> str:
        """e.g. 'CONV_2D x2, FULLY_CONNECTED, QUANTIZE x3' (empty when integer-only)."""
        counts = Counter(op.name for op in self.float_ops)
        return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.most_common())

    def as_dict(self) -> dict:
        return {
            "integer_only": self.integer_only,
            "op_count": len(self.ops),
            "ops": self.op_counts,
            "float_ops": [
                {"index": op.index, "op": op.name, "output": op.output_name, "types": op.input_types + op.output_types}
                for op in self.float_ops
            ],
            "tensor_types": self.tensor_types,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "subgraphs": self.subgraphs,
        }


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _name(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def inspect_model(content: bytes) -> ModelInspection:
    """Walk the main subgraph of a .tflite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def type_of(index: int) -> str:
        return type_names.get(tensors[index].type, str(tensors[index].type))

    ops = []
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = f"CUSTOM:{_name(code.customCode)}"
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0]
        ops.append(
            OpInfo(
                index=index,
                name=name,
                input_types=[type_of(i) for i in inputs],
                output_types=[type_of(i) for i in outputs],
                output_name=_name(tensors[outputs[0]].name) if outputs else "",
            )
        )

    def io(index: int) -> TensorIO:
        tensor = tensors[index]
        quant = tensor.quantization
        scales = list(quant.scale) if quant is not None and quant.scale is not None else []
        zeros = list(quant.zeroPoint) if quant is not None and quant.zeroPoint is not None else []
        return TensorIO(
            name=_name(tensor.name),
            shape=[int(d) for d in (tensor.shape if tensor.shape is not None else [])],
            dtype=type_of(index).lower(),
            scale=float(scales[0]) if scales else None,
            zero_point=int(zeros[0]) if zeros else None,
        )

    tensor_types = dict(Counter(type_of(i) for i in range(len(tensors))).most_common())
    return ModelInspection(
        ops=ops,
        tensor_types=tensor_types,
        inputs=[io(int(i)) for i in graph.inputs],
        outputs=[io(int(i)) for i in graph.outputs],
        subgraphs=len(model.subgraphs),
    )


def integer_only_problem(inspection: ModelInspection, allow_float: bool) -> str | None:
    """None when acceptable; otherwise the clause that names the float ops (for the gate's sentence)."""
    if inspection.integer_only or allow_float:
        return None
    float_io = [t.name or "?" for t in inspection.inputs + inspection.outputs if t.dtype.upper() in FLOAT_TYPES]
    parts = []
    if inspection.float_ops:
        parts.append(f"{len(inspection.float_ops)} ops run in float ({inspection.float_summary()})")
    if float_io:
        parts.append(f"float input/output tensors ({', '.join(float_io)})")
    return f"the model is not integer-only: {' and '.join(parts)}, and float ops were not allowed (--allow-float-ops)"
