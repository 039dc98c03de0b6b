"""The Lua scripts of `RedisStore`'s writes: each checks everything first, then writes the data and appends its
change to the stream with the next contiguous sequence number, atomically (Redis runs a script as one command).
"""

from __future__ import annotations

OP_TTL_S = 60  # how long a write's result is kept under op:<token>, so that a retried write is applied once

# Shared by every write script: ARGV[1] prefix, ARGV[2] op token ('' for none), ARGV[3] new epoch,
# ARGV[4] stream maxlen. The result is a string, kept under op:<token> for retries.
_PRELUDE = """
local p = ARGV[1]
local token = ARGV[2]
if token ~= '' then
  local done = redis.call('GET', p .. 'op:' .. token)
  if done then return done end
end
local maxlen = ARGV[4]
local function log(kind, gallery, face_id, subject_id)
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('XADD', p .. 'changes', 'MAXLEN', '~', maxlen, seq .. '-0',
             'kind', kind, 'gallery', gallery, 'face_id', face_id, 'subject_id', subject_id)
  return seq
end
local function finish(result)
  redis.call('SET', p .. 'epoch', ARGV[3], 'NX')
  if token ~= '' then redis.call('SET', p .. 'op:' .. token, result, 'EX', OP_TTL) end
  return result
end
""".replace("OP_TTL", str(OP_TTL_S))

# ARGV[5] gallery, [6] created_at, [7] embedder ('' for none). Returns '1' when created, '0' when it existed (nothing
# written). An empty gallery has no change: the feed only carries faces.
_CREATE_GALLERY = _PRELUDE + """
local gallery = ARGV[5]
if redis.call('HSETNX', p .. 'galleries', gallery, ARGV[6]) == 0 then return finish('0') end
if ARGV[7] ~= '' then redis.call('HSET', p .. 'gallery_embedder', gallery, ARGV[7]) end
return finish('1')
"""

# ARGV[5] gallery, [6] subject, [7] '1' to set the name, [8] name JSON, [9] '1' to set metadata, [10] metadata JSON,
# [11] now, [12] face count, [13] embedder ('' for no check), [14] '1' when it may extend an unrecorded gallery,
# then (embedding, box JSON, branch JSON, thumbnail JPEG or '', source or '') per face. Returns "id,id,...", where
# "=id" is the subject's existing face of that source (not added again), or "!<recorded embedder>" (nothing written)
# when the gallery was filled by another embedder.
_ADD_FACES = _PRELUDE + """
local gallery, sid, now = ARGV[5], ARGV[6], ARGV[11]
local n = tonumber(ARGV[12])
local embedder = ARGV[13]
if embedder ~= '' then
  if redis.call('HEXISTS', p .. 'galleries', gallery) == 1 then
    local recorded = redis.call('HGET', p .. 'gallery_embedder', gallery)
    if recorded then
      if recorded ~= embedder then return finish('!' .. recorded) end
    elseif ARGV[14] ~= '1' then
      return finish('!')
    end
  else
    redis.call('HSET', p .. 'gallery_embedder', gallery, embedder)
  end
end
redis.call('HSETNX', p .. 'galleries', gallery, now)
local skey = p .. 's:' .. gallery .. ':' .. sid
local created = redis.call('HSETNX', skey, 'created_at', now)
if created == 1 then
  redis.call('HSET', skey, 'name', 'null', 'metadata', '{}', 'updated_at', now)
  redis.call('ZADD', p .. 'g:' .. gallery .. ':subjects', 0, sid)
end
local changed = false
if ARGV[7] == '1' then redis.call('HSET', skey, 'name', ARGV[8], 'updated_at', now); changed = true end
if ARGV[9] == '1' then redis.call('HSET', skey, 'metadata', ARGV[10], 'updated_at', now); changed = true end
if changed and created == 0 then log('update', gallery, 0, sid) end
local ids = {}
local srckey = p .. 'src:' .. gallery .. ':' .. sid
for i = 0, n - 1 do
  local source = ARGV[19 + 5 * i]
  local have = source ~= '' and redis.call('HGET', srckey, source)
  if have then
    ids[#ids + 1] = '=' .. have
  else
    local fid = redis.call('INCR', p .. 'next_face_id')
    local fkey = p .. 'f:' .. fid
    redis.call('HSET', fkey, 'gallery', gallery, 'subject_id', sid, 'embedding', ARGV[15 + 5 * i],
               'box', ARGV[16 + 5 * i], 'branch', ARGV[17 + 5 * i], 'created_at', now)
    if ARGV[18 + 5 * i] ~= '' then redis.call('HSET', fkey, 'thumbnail', ARGV[18 + 5 * i]) end
    if source ~= '' then
      redis.call('HSET', fkey, 'source', source)
      redis.call('HSET', srckey, source, fid)
    end
    redis.call('ZADD', p .. 'sf:' .. gallery .. ':' .. sid, fid, fid)
    redis.call('SADD', p .. 'g:' .. gallery .. ':faces', fid)
    log('add', gallery, fid, sid)
    ids[#ids + 1] = fid
  end
end
return finish(table.concat(ids, ','))
"""

# ARGV[5] gallery, [6] subject, [7] '1' to set the name, [8] name JSON, [9] '1' to set metadata, [10] metadata JSON,
# [11] now. Returns '-' when the subject does not exist, else ''.
_UPDATE_SUBJECT = _PRELUDE + """
local gallery, sid, now = ARGV[5], ARGV[6], ARGV[11]
local skey = p .. 's:' .. gallery .. ':' .. sid
if redis.call('EXISTS', skey) == 0 then return finish('-') end
local changed = false
if ARGV[7] == '1' then redis.call('HSET', skey, 'name', ARGV[8], 'updated_at', now); changed = true end
if ARGV[9] == '1' then redis.call('HSET', skey, 'metadata', ARGV[10], 'updated_at', now); changed = true end
if changed then log('update', gallery, 0, sid) end
return finish('')
"""

# ARGV[5] gallery, [6] subject. Returns '-' when the subject does not exist, else the removed face ids.
_DELETE_SUBJECT = _PRELUDE + """
local gallery, sid = ARGV[5], ARGV[6]
local skey = p .. 's:' .. gallery .. ':' .. sid
if redis.call('EXISTS', skey) == 0 then return finish('-') end
local fkey = p .. 'sf:' .. gallery .. ':' .. sid
local fids = redis.call('ZRANGE', fkey, 0, -1)
for _, fid in ipairs(fids) do
  redis.call('DEL', p .. 'f:' .. fid)
  redis.call('SREM', p .. 'g:' .. gallery .. ':faces', fid)
  log('remove', gallery, fid, sid)
end
redis.call('DEL', fkey, skey, p .. 'src:' .. gallery .. ':' .. sid)
redis.call('ZREM', p .. 'g:' .. gallery .. ':subjects', sid)
return finish(table.concat(fids, ','))
"""

# ARGV[5] gallery, [6] subject, [7] face id. Returns '-' when there is no such face, else the face id.
_DELETE_FACE = _PRELUDE + """
local gallery, sid, fid = ARGV[5], ARGV[6], ARGV[7]
local fkey = p .. 'sf:' .. gallery .. ':' .. sid
if not redis.call('ZSCORE', fkey, fid) then return finish('-') end
local source = redis.call('HGET', p .. 'f:' .. fid, 'source')
if source then redis.call('HDEL', p .. 'src:' .. gallery .. ':' .. sid, source) end
redis.call('DEL', p .. 'f:' .. fid)
redis.call('ZREM', fkey, fid)
redis.call('SREM', p .. 'g:' .. gallery .. ':faces', fid)
log('remove', gallery, fid, sid)
return finish(fid)
"""

# ARGV[5] gallery. Returns '-' when it does not exist, else the removed face ids (in face id order).
_DELETE_GALLERY = _PRELUDE + """
local gallery = ARGV[5]
if redis.call('HEXISTS', p .. 'galleries', gallery) == 0 then return finish('-') end
local subjects = redis.call('ZRANGE', p .. 'g:' .. gallery .. ':subjects', 0, -1)
local removed = {}
for _, sid in ipairs(subjects) do
  local fkey = p .. 'sf:' .. gallery .. ':' .. sid
  for _, fid in ipairs(redis.call('ZRANGE', fkey, 0, -1)) do
    removed[#removed + 1] = {tonumber(fid), sid}
  end
  redis.call('DEL', fkey, p .. 's:' .. gallery .. ':' .. sid, p .. 'src:' .. gallery .. ':' .. sid)
end
table.sort(removed, function(a, b) return a[1] < b[1] end)
local ids = {}
for _, face in ipairs(removed) do
  redis.call('DEL', p .. 'f:' .. face[1])
  log('remove', gallery, face[1], face[2])
  ids[#ids + 1] = face[1]
end
redis.call('DEL', p .. 'g:' .. gallery .. ':subjects', p .. 'g:' .. gallery .. ':faces')
redis.call('HDEL', p .. 'galleries', gallery)
redis.call('HDEL', p .. 'gallery_embedder', gallery)
return finish(table.concat(ids, ','))
"""


WRITE_SCRIPTS: dict[str, str] = {
    "create": _CREATE_GALLERY,
    "add": _ADD_FACES,
    "update": _UPDATE_SUBJECT,
    "del_subject": _DELETE_SUBJECT,
    "del_face": _DELETE_FACE,
    "del_gallery": _DELETE_GALLERY,
}
