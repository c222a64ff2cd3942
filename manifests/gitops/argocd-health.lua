-- Argo CD health of a FaceKeyDeployment (facekey.dev), from the conditions the operator writes:
-- Progressing until the operator has observed the current generation, Degraded while Stalled
-- (blocked image, failed scan, invalid spec, stuck rollout, refused write), Healthy when Ready,
-- Progressing otherwise (scan pending, rolling out). See docs/operator.md, "kstatus, Flux, Argo CD".
local hs = {status = "Progressing", message = "waiting for the operator's first status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.message = "the operator has not yet observed generation " .. generation .. " (status is of " .. observed .. ")"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    hs.status = "Degraded"
    hs.message = c.message
    return hs
  end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    hs.message = c.message
    if c.status == "True" then
      hs.status = "Healthy"
    end
  end
end
return hs
