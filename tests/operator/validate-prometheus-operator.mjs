// Validate ServiceMonitor, PodMonitor, PrometheusRule and AlertmanagerConfig documents against
// prometheus-operator's schemas (npm @kubernetes-models/prometheus-operator, ESM-only).
//
// usage: node validate-prometheus-operator.mjs FILE.yaml...
// env:   NODE_MODULES  directory holding @kubernetes-models/prometheus-operator and js-yaml
//        EXPECT_KINDS  comma-separated kinds that must each appear at least once (optional)
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modulesDir = path.resolve(process.env.NODE_MODULES || path.join(here, '..', 'node', 'node_modules'));
const yaml = createRequire(path.join(modulesDir, 'noop.js'))('js-yaml');
const load = (sub) =>
  import(pathToFileURL(path.join(modulesDir, '@kubernetes-models/prometheus-operator', sub, 'index.js')).href);
const v1 = await load('monitoring.coreos.com/v1');
const v1alpha1 = await load('monitoring.coreos.com/v1alpha1');

const models = {
  'monitoring.coreos.com/v1/ServiceMonitor': v1.ServiceMonitor,
  'monitoring.coreos.com/v1/PodMonitor': v1.PodMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': v1.PrometheusRule,
  'monitoring.coreos.com/v1alpha1/AlertmanagerConfig': v1alpha1.AlertmanagerConfig,
};

let failures = 0;
const seen = {};
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, 'utf8'))) {
    if (!doc || typeof doc !== 'object') continue;
    const key = `${doc.apiVersion}/${doc.kind}`;
    const Model = models[key];
    if (!Model) {
      if (String(doc.apiVersion).startsWith('monitoring.coreos.com/')) {
        console.error(`FAIL ${file}: no schema model for ${key}`);
        failures++;
      }
      continue;
    }
    const name = `${doc.kind} ${doc.metadata?.namespace}/${doc.metadata?.name}`;
    try {
      new Model(doc).validate();
      seen[doc.kind] = (seen[doc.kind] || 0) + 1;
      console.log(`ok   ${name} (${path.basename(file)})`);
    } catch (err) {
      failures++;
      console.error(`FAIL ${name} (${path.basename(file)}): ${err.message}`);
    }
  }
}
for (const kind of (process.env.EXPECT_KINDS || '').split(',').filter(Boolean)) {
  if (!seen[kind]) {
    console.error(`FAIL expected at least one ${kind}, found none`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
