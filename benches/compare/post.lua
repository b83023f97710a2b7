-- wrk script: POST one sentence per request, cycling through a fixed list, in the body
-- shape of the server under test (`wrk ... -s post.lua URL -- so1s` or `-- bentoml`); with
-- `-- rerank`, one query against all eight sentences per request (both servers' shape).
local sentences = {
  "Hello world",
  "Model serving should never drop a request.",
  "The quick brown fox jumps over the lazy dog.",
  "A new version goes live in seconds.",
  "Rust is a systems programming language.",
  "Embeddings map sentences to vectors.",
  "Batching shares one forward pass between requests.",
  "How fast can a CPU answer this question?",
}
local bodies = {}

function init(args)
  local style = args[1] or "so1s"
  if style == "rerank" then
    local texts = '"' .. table.concat(sentences, '", "') .. '"'
    bodies[1] = '{"query": "what is model serving?", "texts": [' .. texts .. ']}'
    bodies[2] = '{"query": "Where does the cat sleep?", "texts": [' .. texts .. ']}'
    return
  end
  for i, s in ipairs(sentences) do
    if style == "bentoml" then
      bodies[i] = '{"texts": ["' .. s .. '"]}'
    else
      bodies[i] = '{"text": "' .. s .. '"}'
    end
  end
end

local n = 0
function request()
  n = n % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[n])
end
