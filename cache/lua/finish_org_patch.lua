-- finish_org_patch.lua: forget a pending org patch once all its users are settled.
--
-- Run by the worker after its passes over an org. record.lua may have listed more users for
-- the org meanwhile, so the entry is removed only once no user waits for that org's patch.
--
-- KEYS[1]  clerk-org-cache:org-patches         set of pending org patches
-- KEYS[2]  clerk-org-cache:org-patch:<orgId>   set of the org's users waiting for a patch
--
-- ARGV[1]  the org-patches entry: 'o:<orgId>' (org updated) or 'x:<orgId>' (org deleted)
--
-- Reply: 1 the entry was forgotten | 0 users still wait, or the entry was already gone

if redis.call('SCARD', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end
return 0
