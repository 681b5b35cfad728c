"""Protobuf message classes built at run time from a ``.proto`` file's field numbers and types, for the
formats whose ``.proto`` files are not published as maintained Python packages (zipkin-api's
``zipkin2.proto``, jaeger-idl's ``model.proto``). Each file gets a descriptor pool of its own, so nothing
else in the process can clash with its names.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FieldType = descriptor_pb2.FieldDescriptorProto
"""``FieldType.TYPE_STRING`` ...: the field types ``add_message`` takes."""

Field = tuple[str, int, int, str]
"""(name, number, ``FieldType.TYPE_*``, type name): the type name is the full name (``.package.Message``)
of a message or enum field, ``""`` for a scalar; a ``[]`` suffix makes the field repeated."""


def proto3_file(name: str, package: str) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package)
    file.syntax = "proto3"
    return file


def add_message(
    file: descriptor_pb2.FileDescriptorProto, name: str, *fields: Field, parent: Any = None
) -> descriptor_pb2.DescriptorProto:
    """Add a message of ``fields`` to ``file`` (or nested in the message ``parent``); returns it."""
    target = (parent.nested_type if parent is not None else file.message_type).add(name=name)
    for field_name, number, field_type, type_name in fields:
        label = FieldType.LABEL_REPEATED if type_name.endswith("[]") else FieldType.LABEL_OPTIONAL
        field = target.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name.removesuffix("[]"):
            field.type_name = type_name.removesuffix("[]")
    return target


def add_enum(parent: Any, name: str, *values: str) -> None:
    """Add an enum of ``values`` (numbered from 0) to ``parent``, a file or a message."""
    enum = parent.enum_type.add(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)


def message_class(file: descriptor_pb2.FileDescriptorProto, full_name: str) -> Any:
    """The class of the message ``full_name`` of ``file``, in a pool of the file's own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName(full_name)
    get_class = getattr(message_factory, "GetMessageClass", None)  # newer protobuf; older ones: GetPrototype
    if get_class is None:  # pragma: no cover - depends on the installed protobuf
        get_class = getattr(message_factory.MessageFactory(pool), "GetPrototype")  # noqa: B009
    return get_class(descriptor)
