"""chatforge's chat format (tokenizer/chat.py) as the chat templates other runtimes render: Jinja for transformers,
vLLM and llama.cpp, Go template syntax for Ollama.

The Jinja template reproduces `render`/`render_prompt` token for token (tests/test_export_hf.py): a system turn of
its own, assistant content as a string or parts (text, think, python, search, output), and an OpenAI-style `tool`
message as <|output_start|> ... <|output_end|> inside the assistant turn that called the tool, which stays open.
`{% generation %}` marks what `render`'s loss mask trains, for transformers' `return_assistant_tokens_mask`; the
GGUF gets the same template without those tags, which only transformers knows.
"""

from chatforge.tokenizer.chat import PARTS

# One expression per output and `-` on every tag: Jinja whitespace would otherwise become tokens.
CHAT_TEMPLATE = """{{- bos_token -}}
{%- set opens = OPENS -%}
{%- set closes = CLOSES -%}
{%- for m in messages -%}
{%- set prev_role = '' if loop.first else messages[loop.index0 - 1].role -%}
{%- set next_role = '' if loop.last else messages[loop.index0 + 1].role -%}
{%- set parts = [{'type': 'text', 'text': m.content}] if m.content is string else m.content -%}
{%- if m.role == 'tool' -%}
{{- '<|output_start|>' -}}{%- for p in parts -%}{{- p.text -}}{%- endfor -%}{{- '<|output_end|>' -}}
{%- else -%}
{%- if prev_role != 'tool' -%}{{- '<|im_start|>' + m.role + '<|im_sep|>' -}}{%- endif -%}
{%- for p in parts -%}
{%- if m.role == 'assistant' and p.type != 'output' -%}
{%- generation -%}{{- opens.get(p.type, '') + p.text + closes.get(p.type, '') -}}{%- endgeneration -%}
{%- else -%}{{- opens.get(p.type, '') + p.text + closes.get(p.type, '') -}}{%- endif -%}
{%- endfor -%}
{%- if next_role != 'tool' -%}
{%- if m.role == 'assistant' -%}{%- generation -%}{{- '<|im_end|>' -}}{%- endgeneration -%}
{%- else -%}{{- '<|im_end|>' -}}{%- endif -%}
{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and (not messages or messages[-1].role != 'tool') -%}
{{- '<|im_start|>assistant<|im_sep|>' -}}
{%- endif -%}""".replace("OPENS", repr({t: o for t, (o, _, _) in PARTS.items() if o})).replace(
    "CLOSES", repr({t: c for t, (_, c, _) in PARTS.items() if c}))

# Ollama's messages carry no parts, so its template has the plain turns; the GGUF's Jinja template has the rest.
OLLAMA_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>
{{- end }}<|im_start|>assistant<|im_sep|>"""


def plain_template() -> str:
    """CHAT_TEMPLATE without transformers' `{% generation %}` tags, for runtimes that compile plain Jinja."""
    return CHAT_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
