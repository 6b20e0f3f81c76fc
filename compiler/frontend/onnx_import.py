"""ONNX -> IR: maps a ModelProto onto edgec's IR faithfully, validating as it goes.

External data is never read: external tensors become :class:`ExternalTensor` references after their
location is checked. Big inline initializers (``raw_data``) of a model file are not read either: they
become :class:`ExternalTensor` references into the model file itself (see :mod:`.wire`). Graphs
whose nodes are out of order are toposorted (stably); real problems raise ``ModelLoadError`` /
``UnsupportedModelError`` with a one-line message naming the file and the culprit.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import onnx
from onnx import AttributeProto, TensorProto

from ..errors import EdgecError, ModelLoadError, UnsupportedModelError
from ..ir.core import Attr, AttrKind, Function, Graph, Model, Node, SparseTensor, Value
from ..ir.dtypes import DType
from ..ir.tensor import ExternalTensor, Tensor, from_proto_values
from ..ir.types import MapType, OptionalType, SequenceType, Shape, SparseTensorType, TensorType, Type
from . import validate, wire
from .validate import ExternalDataResolver, OpChecker, node_label

__all__ = ["load_model", "from_proto"]


def load_model(path: str, *, check: bool = True) -> Model:
    """Read an ONNX file (external data and big inline initializers stay on disk) into a :class:`Model`.

    ``check`` also enforces the supported opset / IR-version window and that every op is known.
    Raises ``ModelLoadError`` or ``UnsupportedModelError`` naming ``path`` and the culprit.
    """
    path = os.fspath(path)
    lazy = wire.read_model_lazy(path)
    inline: Optional[Tuple[str, Dict[int, Tuple[int, int]]]] = None
    if lazy is None:
        proto = validate.read_model_file(path)
    else:
        proto, spans = lazy
        inline = (os.path.realpath(path), spans)
    return _Importer(proto, os.path.dirname(os.path.abspath(path)), path, check, inline).run()


def from_proto(proto: onnx.ModelProto, base_dir: Optional[str] = None, *, check: bool = True,
               source: Optional[str] = None) -> Model:
    """Map a ``ModelProto`` onto the IR; ``base_dir`` is where its external data files live."""
    src = source or (os.path.join(base_dir, "<model>") if base_dir else "<model>")
    return _Importer(proto, base_dir, src, check).run()


def _domain(d: str) -> str:
    return "" if d == "ai.onnx" else d


class _Scope:
    """Names visible in a graph: its own values, then those of the enclosing graphs."""

    __slots__ = ("names", "outer")

    def __init__(self, names: Dict[str, Value], outer: Optional["_Scope"]) -> None:
        self.names = names
        self.outer = outer

    def lookup(self, name: str) -> Optional[Value]:
        s: Optional[_Scope] = self
        while s is not None:
            v = s.names.get(name)
            if v is not None:
                return v
            s = s.outer
        return None


def _graph_attrs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def _free_names(gp: onnx.GraphProto) -> Set[str]:
    """Names a graph uses but does not define (its outer-scope captures)."""
    defined = {v.name for v in gp.input}
    defined.update(t.name for t in gp.initializer)
    defined.update(s.values.name for s in gp.sparse_initializer)
    used: Set[str] = set()
    for n in gp.node:
        defined.update(n.output)
        used.update(n.input)
        for sg in _graph_attrs(n):
            used |= _free_names(sg)
    used.update(o.name for o in gp.output)
    used.discard("")
    return used - defined


def _collect_names(nodes: Iterable[onnx.NodeProto], out: Set[str]) -> None:
    for n in nodes:
        out.add(n.name)
        out.update(n.output)
        for sg in _graph_attrs(n):
            out.update(v.name for v in sg.input)
            out.update(t.name for t in sg.initializer)
            _collect_names(sg.node, out)


class _Importer:
    def __init__(self, proto: onnx.ModelProto, base_dir: Optional[str], src: str, check: bool,
                 inline: Optional[Tuple[str, Dict[int, Tuple[int, int]]]] = None) -> None:
        self.proto = proto
        self.inline = inline  # (model file, {main-graph initializer index: (offset, length)}) of stripped payloads
        self.src = src
        self.check = check
        self.ext = ExternalDataResolver(base_dir, src)
        self.base_dir = base_dir
        self.function_keys: Set[Tuple[str, str, str]] = set()
        self.ops: Optional[OpChecker] = None

    def fail(self, msg: str) -> ModelLoadError:
        return ModelLoadError(f"{self.src}: {msg}")

    # --- model --------------------------------------------------------------------------------
    def run(self) -> Model:
        p = self.proto
        if not p.HasField("graph"):
            raise self.fail("model has no graph")
        if self.check:
            validate.check_versions(p, self.src)
        opsets = self._opsets(p.opset_import, "model")
        for fp in p.functions:
            key = (_domain(fp.domain), fp.name, fp.overload)
            if key in self.function_keys:
                raise self.fail(f"function '{fp.domain}::{fp.name}' is defined twice")
            self.function_keys.add(key)
        self.ops = OpChecker(self.src, self.function_keys) if self.check else None
        try:
            return self._model(p, opsets)
        except EdgecError:
            raise
        except RecursionError:
            raise UnsupportedModelError(f"{self.src}: subgraphs are nested too deeply") from None
        except Exception as e:  # a safety net: never let a raw protobuf/Python error reach the user
            detail = str(e).splitlines()[0] if str(e) else ""
            raise ModelLoadError(f"{self.src}: malformed model ({type(e).__name__}: {detail})") from None

    def _opsets(self, imports: Sequence[onnx.OperatorSetIdProto], what: str) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for o in imports:
            d = _domain(o.domain)
            if d in out and out[d] != o.version:
                raise self.fail(f"{what} imports domain '{o.domain}' twice ({out[d]} and {o.version})")
            out[d] = int(o.version)
        return out

    def _model(self, p: onnx.ModelProto, opsets: Dict[str, int]) -> Model:
        gp = p.graph
        g = Graph(gp.name)
        g._names = self._all_names(gp.input, gp.initializer, gp.node)
        model = Model(g, opsets, ir_version=p.ir_version)
        model.opset_imports = dict(opsets)
        model.producer_name = p.producer_name
        model.producer_version = p.producer_version
        model.domain = p.domain
        model.model_version = p.model_version
        model.doc_string = p.doc_string
        model.metadata_props = {e.key: e.value for e in p.metadata_props}
        model.training_info = [t.SerializeToString(deterministic=True) for t in p.training_info]
        if len(p.configuration):
            model.meta["onnx.configuration"] = [c.SerializeToString(deterministic=True) for c in p.configuration]
        model.base_dir = self.base_dir
        for fp in p.functions:
            f = self._function(fp)
            model.functions[f.key] = f
        self._fill_graph(g, gp.input, gp.initializer, gp.sparse_initializer, gp.node, gp.output, gp.value_info,
                         None, "", opsets, lazy=self.inline[1] if self.inline else None)
        self._graph_extras(g, gp)
        return model

    @staticmethod
    def _all_names(inputs, inits, nodes) -> Set[str]:
        names = {v.name if hasattr(v, "name") else v for v in inputs}
        names.update(t.name for t in inits)
        _collect_names(nodes, names)
        names.discard("")
        return names

    def _function(self, fp: onnx.FunctionProto) -> Function:
        where = f" in function '{fp.domain}::{fp.name}'"
        opsets = self._opsets(fp.opset_import, f"function '{fp.name}'")
        g = Graph(fp.name)
        g._names = self._all_names(fp.input, (), fp.node)
        vis = {vi.name: vi for vi in fp.value_info}
        inputs = [vis.get(n) or onnx.ValueInfoProto(name=n) for n in fp.input]
        outputs = [vis.get(n) or onnx.ValueInfoProto(name=n) for n in fp.output]
        rest = [vi for vi in fp.value_info if vi.name not in set(fp.input) | set(fp.output)]
        self._fill_graph(g, inputs, (), (), fp.node, outputs, rest, None, where, opsets or self._opsets(self.proto.opset_import, "model"))
        defaults = {a.name: self._attr(a, None, None, where) for a in fp.attribute_proto}
        f = Function(_domain(fp.domain), fp.name, g, overload=fp.overload,
                     attributes=list(fp.attribute) + [a.name for a in fp.attribute_proto],
                     attribute_defaults=defaults, opset_imports=opsets)
        f.doc_string = fp.doc_string
        f.metadata_props = {e.key: e.value for e in fp.metadata_props}
        return f

    # --- graphs -------------------------------------------------------------------------------
    def _graph_extras(self, g: Graph, gp: onnx.GraphProto) -> None:
        g.doc_string = gp.doc_string
        g.metadata_props = {e.key: e.value for e in gp.metadata_props}
        if len(gp.quantization_annotation):
            g.meta["onnx.quantization_annotation"] = [
                a.SerializeToString(deterministic=True) for a in gp.quantization_annotation]

    def _subgraph(self, gp: onnx.GraphProto, outer: _Scope, parent: Node, where: str, opsets: Dict[str, int]) -> Graph:
        g = Graph(gp.name)
        g.parent = parent
        where = f"{where} in subgraph '{gp.name}' of {node_label(parent.name, parent.op_type, -1)}"
        self._fill_graph(g, gp.input, gp.initializer, gp.sparse_initializer, gp.node, gp.output, gp.value_info,
                         outer, where, opsets)
        self._graph_extras(g, gp)
        return g

    def _fill_graph(self, g: Graph, inputs, inits, sparse, nodes, outputs, value_info,
                    outer: Optional[_Scope], where: str, opsets: Dict[str, int],
                    lazy: Optional[Dict[int, Tuple[int, int]]] = None) -> None:
        local: Dict[str, Value] = {}
        for vi in inputs:
            if not vi.name:
                raise self.fail(f"graph input #{len(local)}{where} has no name")
            if vi.name in local:
                raise self.fail(f"graph input '{vi.name}'{where} is declared twice")
            v = self._value(vi)
            g.add_input(v)
            local[vi.name] = v
        seen_init: Set[str] = set()
        for i, tp in enumerate(inits):
            span = lazy.get(i) if lazy else None
            t = self._tensor(tp, where) if span is None else self._inline_tensor(tp, span, where)
            self._add_const(g, local, seen_init, tp.name, t, where)
        for sp in sparse:
            t = SparseTensor(self._tensor(sp.values, where), self._tensor(sp.indices, where), sp.dims)
            v = self._add_const(g, local, seen_init, sp.values.name, t, where)
            if v.type is None:
                v.type = SparseTensorType(t.dtype, Shape(t.dims))
        nodes = list(nodes)
        order = self._order(nodes, local, outer, where, opsets)
        scope = _Scope(local, outer)
        for i in order:
            self._node(nodes[i], g, scope, where, opsets)
        for vi in outputs:
            if not vi.name:
                raise self.fail(f"a graph output{where} has no name")
            v = scope.lookup(vi.name)
            if v is None:
                raise self.fail(f"graph output '{vi.name}'{where} has no producer")
            if local.get(vi.name) is v:
                self._annotate(v, vi)
            g.add_output(v)
        for vi in value_info:
            v = local.get(vi.name)
            if v is not None:
                self._annotate(v, vi)

    def _add_const(self, g: Graph, local: Dict[str, Value], seen: Set[str], name: str, t, where: str) -> Value:
        if not name:
            raise self.fail(f"an initializer{where} has no name")
        if name in seen:
            raise self.fail(f"initializer '{name}'{where} is defined twice")
        seen.add(name)
        v = local.get(name)
        if v is None:
            v = local[name] = Value(name)
        v.const = t
        g.add_initializer(v)
        return v

    def _order(self, nodes: List[onnx.NodeProto], local: Dict[str, Value], outer: Optional[_Scope],
               where: str, opsets: Dict[str, int]) -> List[int]:
        producer: Dict[str, int] = {}
        for i, n in enumerate(nodes):
            if self.ops is not None:
                self.ops.check(n, i, opsets, where)
            for o in n.output:
                if not o:
                    continue
                if o in local or o in producer:
                    first = f"{node_label(nodes[producer[o]].name, nodes[producer[o]].op_type, producer[o])}" \
                        if o in producer else "a graph input or initializer"
                    raise self.fail(f"value '{o}'{where} is defined twice: by {node_label(n.name, n.op_type, i)} and by {first}")
                producer[o] = i
        deps: List[List[int]] = []
        for i, n in enumerate(nodes):
            names = [x for x in n.input if x]
            for sg in _graph_attrs(n):
                names.extend(sorted(_free_names(sg)))
            ds = []
            for x in names:
                j = producer.get(x)
                if j is not None:
                    ds.append(j)
                elif x not in local and (outer is None or outer.lookup(x) is None):
                    raise self.fail(f"{node_label(n.name, n.op_type, i)}{where} uses '{x}', which is defined nowhere")
            deps.append(ds)
        order = validate.stable_toposort(deps)
        if len(order) < len(nodes):
            k = validate.node_in_cycle(deps, set(order))
            raise self.fail(f"the graph{where} has a cycle through {node_label(nodes[k].name, nodes[k].op_type, k)}")
        return order

    def _node(self, np_: onnx.NodeProto, g: Graph, scope: _Scope, where: str, opsets: Dict[str, int]) -> None:
        inputs = [scope.lookup(x) if x else None for x in np_.input]
        node = Node(np_.op_type, inputs, [o or None for o in np_.output], domain=_domain(np_.domain),
                    name=np_.name, overload=np_.overload)
        node.doc_string = np_.doc_string
        node.metadata_props = {e.key: e.value for e in np_.metadata_props}
        if len(np_.device_configurations):
            node.meta["onnx.device_configurations"] = [
                c.SerializeToString(deterministic=True) for c in np_.device_configurations]
        g.append(node)
        for v in node.outputs:
            if v is not None:
                scope.names[v.name] = v
        for ap in np_.attribute:
            node.set_attr(ap.name, self._attr(ap, scope, node, where, opsets))

    # --- values, types, attributes, tensors ---------------------------------------------------
    def _value(self, vi: onnx.ValueInfoProto) -> Value:
        v = Value(vi.name, self._type(vi.type) if vi.HasField("type") else None)
        v.doc_string = vi.doc_string
        v.metadata_props = {e.key: e.value for e in vi.metadata_props}
        return v

    def _annotate(self, v: Value, vi: onnx.ValueInfoProto) -> None:
        if v.type is None and vi.HasField("type"):
            v.type = self._type(vi.type)
        if vi.doc_string and not v.doc_string:
            v.doc_string = vi.doc_string
        for e in vi.metadata_props:
            v.metadata_props.setdefault(e.key, e.value)

    def _dtype(self, n: int, what: str) -> DType:
        try:
            return DType(n)
        except ValueError:
            raise UnsupportedModelError(f"{self.src}: {what} has unknown element type {n}") from None

    def _type(self, tp: onnx.TypeProto) -> Optional[Type]:
        kind = tp.WhichOneof("value")
        if kind == "tensor_type" or kind == "sparse_tensor_type":
            tt = getattr(tp, kind)
            shape = Shape(None)
            if tt.HasField("shape"):
                shape = Shape(tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in tt.shape.dim))
            cls = TensorType if kind == "tensor_type" else SparseTensorType
            return cls(self._dtype(tt.elem_type, "a type"), shape)
        if kind == "sequence_type":
            st = tp.sequence_type
            return SequenceType(self._type(st.elem_type) if st.HasField("elem_type") else None)
        if kind == "optional_type":
            ot = tp.optional_type
            return OptionalType(self._type(ot.elem_type) if ot.HasField("elem_type") else None)
        if kind == "map_type":
            mt = tp.map_type
            return MapType(self._dtype(mt.key_type, "a map key"), self._type(mt.value_type) if mt.HasField("value_type") else None)
        return None

    def _tensor(self, tp: TensorProto, where: str) -> Tensor:
        if tp.data_location == TensorProto.EXTERNAL:
            path, offset, length = self.ext.resolve(tp)
            return ExternalTensor(path, offset, length, self._dtype(tp.data_type, f"tensor '{tp.name}'"), tuple(tp.dims))
        validate.check_raw_size(tp, self.src)
        try:
            return from_proto_values(tp)
        except EdgecError:
            raise
        except Exception as e:
            raise self.fail(f"tensor '{tp.name}'{where} does not decode: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def _inline_tensor(self, tp: TensorProto, span: Tuple[int, int], where: str) -> Tensor:
        """A tensor whose raw_data was left in the model file at ``span`` = (offset, length)."""
        if tp.data_location == TensorProto.EXTERNAL:  # external data wins over raw_data, as when eager
            return self._tensor(tp, where)
        offset, length = span
        want = validate.expected_nbytes(tp.data_type, tp.dims, tp.name, self.src)
        if tp.HasField("segment"):
            raise UnsupportedModelError(f"{self.src}: tensor '{tp.name}' uses segments, which are not supported")
        if want is None:  # strings keep their values in string_data; raw_data is ignored
            return self._tensor(tp, where)
        if length != want:
            raise self.fail(f"tensor '{tp.name}' raw_data has {length} bytes but dims {list(tp.dims)} need {want}")
        assert self.inline is not None
        return ExternalTensor(self.inline[0], offset, length, DType(tp.data_type), tuple(tp.dims))

    def _attr(self, ap: AttributeProto, scope: Optional[_Scope], node: Optional[Node], where: str,
              opsets: Optional[Dict[str, int]] = None) -> Attr:
        kind = AttrKind(ap.type) if ap.type else _infer_kind(ap)
        if ap.ref_attr_name:
            return Attr(ap.name, kind, None, ref=ap.ref_attr_name, doc_string=ap.doc_string)
        what = f"{where} attribute '{ap.name}'"
        K = AttrKind
        if kind == K.FLOAT:
            val = ap.f
        elif kind == K.INT:
            val = ap.i
        elif kind == K.STRING:
            val = _text(ap.s)
        elif kind == K.TENSOR:
            val = self._tensor(ap.t, what)
        elif kind == K.GRAPH:
            val = self._graph_attr(ap.g, scope, node, where, opsets)
        elif kind == K.SPARSE_TENSOR:
            val = self._sparse(ap.sparse_tensor, what)
        elif kind == K.TYPE_PROTO:
            val = self._type(ap.tp)
        elif kind == K.FLOATS:
            val = list(ap.floats)
        elif kind == K.INTS:
            val = list(ap.ints)
        elif kind == K.STRINGS:
            val = [_text(s) for s in ap.strings]
        elif kind == K.TENSORS:
            val = [self._tensor(t, what) for t in ap.tensors]
        elif kind == K.GRAPHS:
            val = [self._graph_attr(sg, scope, node, where, opsets) for sg in ap.graphs]
        elif kind == K.SPARSE_TENSORS:
            val = [self._sparse(s, what) for s in ap.sparse_tensors]
        elif kind == K.TYPE_PROTOS:
            val = [self._type(t) for t in ap.type_protos]
        else:
            raise self.fail(f"attribute '{ap.name}'{where} has no value")
        return Attr(ap.name, kind, val, doc_string=ap.doc_string)

    def _graph_attr(self, gp, scope, node, where, opsets) -> Graph:
        if node is None or scope is None:
            raise UnsupportedModelError(f"{self.src}: graph-valued attribute default{where} is not supported")
        return self._subgraph(gp, scope, node, where, opsets)

    def _sparse(self, sp: onnx.SparseTensorProto, where: str) -> SparseTensor:
        return SparseTensor(self._tensor(sp.values, where), self._tensor(sp.indices, where), sp.dims)


def _text(b: bytes):
    """ONNX strings are bytes: text when valid UTF-8, bytes otherwise."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _infer_kind(ap: AttributeProto) -> AttrKind:
    """The kind of an attribute written without ``type`` (very old models)."""
    for field, kind in (("f", AttrKind.FLOAT), ("i", AttrKind.INT), ("s", AttrKind.STRING), ("t", AttrKind.TENSOR),
                        ("g", AttrKind.GRAPH), ("sparse_tensor", AttrKind.SPARSE_TENSOR), ("tp", AttrKind.TYPE_PROTO)):
        if ap.HasField(field):
            return kind
    for field, kind in (("floats", AttrKind.FLOATS), ("ints", AttrKind.INTS), ("strings", AttrKind.STRINGS),
                        ("tensors", AttrKind.TENSORS), ("graphs", AttrKind.GRAPHS),
                        ("sparse_tensors", AttrKind.SPARSE_TENSORS), ("type_protos", AttrKind.TYPE_PROTOS)):
        if len(getattr(ap, field)):
            return kind
    return AttrKind.UNDEFINED
