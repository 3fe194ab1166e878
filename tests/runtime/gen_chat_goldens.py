#!/usr/bin/env python3
"""Writes the chat-template golden files in tests/runtime/data/chat/.

Each template (the six real ones in shared/testdata/chat-templates/, the built-in fallbacks in
runtime/templates/, and the feature templates in tests/runtime/data/chat/features/) is rendered
with Python's jinja2 configured as Hugging Face transformers configures it (sandboxed,
trim_blocks=True, lstrip_blocks=True, loopcontrols, a raise_exception global, and tojson as
json.dumps(ensure_ascii=False)) for a set of conversations, with and without the generation
prompt. A conversation that makes jinja2 raise records the error instead of an output.

The C++ side receives the messages as nlohmann::json, whose objects keep their keys sorted, so
the messages are given to jinja2 with sorted keys too.

Usage: python3 tests/runtime/gen_chat_goldens.py   (from anywhere; rewrites the goldens)
"""
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "testdata", "chat-templates")
BUILTINS = os.path.join(REPO, "runtime", "templates")
OUT = os.path.join(HERE, "data", "chat")
FEATURES = os.path.join(OUT, "features")


class RaisedException(Exception):
    pass


def raise_exception(message):
    raise RaisedException(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def sorted_keys(value):
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}]
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

# name -> (messages, extra variables)
CONVERSATIONS = {
    "system_user": ([SYSTEM, {"role": "user", "content": "Hello!"}], {}),
    "user_only": ([{"role": "user", "content": "What is 2+2?"}], {}),
    "multi_turn": ([
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Tell me a joke."},
    ], {}),
    "system_multi_turn": ([
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ], {}),
    "whitespace_unicode": ([
        {"role": "system", "content": "  Sé amable.\n"},
        {"role": "user", "content": "  Héllo wörld 👋 — “quotes” and 'apostrophes' \\ back\tslash \n\n"},
        {"role": "assistant", "content": "\n 你好，世界！ <b>&amp;</b> \n"},
        {"role": "user", "content": "\t¿Qué tal?\u3000"},
    ], {}),
    "content_parts": ([
        {"role": "user", "content": [{"type": "text", "text": " Describe this. "},
                                     {"type": "text", "text": "Briefly."}]},
    ], {}),
    "system_parts": ([
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
    ], {}),
    "alternation_violation": ([
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ], {}),
    "empty": ([], {}),
    "tools": ([
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "{\"temperature\": 21, \"sky\": \"clear\"}",
         "tool_call_id": "call12345", "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C and clear in Paris."},
        {"role": "user", "content": "Thanks!"},
    ], {"tools": TOOLS}),
    "date_and_extra": ([SYSTEM, {"role": "user", "content": "What day is it?"}],
                       {"date_string": "01 Jan 2025", "tools_in_user_message": False}),
    "think_tags": ([
        {"role": "user", "content": "Solve 1+1."},
        {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\nThe answer is 2."},
        {"role": "user", "content": "And 2+2?"},
    ], {}),
}

TOKEN_STYLES = {
    "s": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
}


def render(env, source, messages, add_generation_prompt, bos, eos, extra):
    template = env.from_string(source)
    variables = dict(extra)
    variables.update(messages=messages, add_generation_prompt=add_generation_prompt,
                     bos_token=bos, eos_token=eos)
    return template.render(**variables)


def cases_for(env, source, conversations, token_styles):
    cases = []
    for conv_name, (messages, extra) in conversations.items():
        messages = sorted_keys(messages)
        extra = sorted_keys(extra)
        for style in token_styles:
            bos, eos = TOKEN_STYLES[style]
            for gen in (False, True):
                case = {
                    "name": f"{conv_name}/{style}/{'gen' if gen else 'nogen'}",
                    "messages": messages,
                    "extra": extra,
                    "add_generation_prompt": gen,
                    "bos_token": bos,
                    "eos_token": eos,
                }
                try:
                    case["expected"] = render(env, source, messages, gen, bos, eos, extra)
                except RaisedException as e:
                    case["error"] = str(e)
                    case["raised"] = True
                except Exception as e:  # jinja2 or Python error: the renderer must fail too
                    case["error"] = f"{type(e).__name__}: {e}"
                    case["raised"] = False
                cases.append(case)
    return cases


def write(name, template_ref, cases):
    path = os.path.join(OUT, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"template": template_ref, "cases": cases}, f, ensure_ascii=False, indent=1,
                  sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)}: {len(cases)} cases")


def main():
    env = make_env()
    # Feature templates only need one conversation each; real and built-in ones get them all.
    feature_conversations = {k: CONVERSATIONS[k] for k in ("system_multi_turn", "tools")}
    for file_name in sorted(os.listdir(SHARED)):
        if not file_name.endswith(".jinja"):
            continue
        with open(os.path.join(SHARED, file_name), encoding="utf-8") as f:
            source = f.read()
        write("shared-" + file_name[:-len(".jinja")], "testdata:chat-templates/" + file_name,
              cases_for(env, source, CONVERSATIONS, TOKEN_STYLES))
    for file_name in sorted(os.listdir(BUILTINS)):
        if not file_name.endswith(".jinja"):
            continue
        with open(os.path.join(BUILTINS, file_name), encoding="utf-8") as f:
            source = f.read()
        write("builtin-" + file_name[:-len(".jinja")], "builtin:" + file_name[:-len(".jinja")],
              cases_for(env, source, CONVERSATIONS, TOKEN_STYLES))
    for file_name in sorted(os.listdir(FEATURES)):
        if not file_name.endswith(".jinja"):
            continue
        with open(os.path.join(FEATURES, file_name), encoding="utf-8") as f:
            source = f.read()
        write("feature-" + file_name[:-len(".jinja")], "source:tests/runtime/data/chat/features/" +
              file_name, cases_for(env, source, feature_conversations, ["s"]))


if __name__ == "__main__":
    sys.exit(main())
