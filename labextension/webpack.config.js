// Extra webpack configuration merged into JupyterLab's extension build.
//
// Automerge's wasm-bindgen glue falls back to
// `new URL('automerge_wasm_bg.wasm', import.meta.url)` when it is initialised
// without a module. We always initialise it from the bundled base64 string
// (src/repo.ts), so:
// - `url: false` stops webpack from emitting a second, 3.5 MB copy of the
//   WebAssembly as an asset;
// - the rule below rewrites that `import.meta.url` (which webpack would turn
//   into the absolute file:// path of the build machine) so the bundle is the
//   same wherever it is built.
const path = require('path');

module.exports = {
  module: {
    parser: {
      javascript: {
        url: false
      }
    },
    rules: [
      {
        test: /[\\/]@automerge[\\/]automerge[\\/]dist[\\/]mjs[\\/]wasm_bindgen_output[\\/]web[\\/]automerge_wasm\.js$/,
        loader: path.resolve(__dirname, 'webpack-import-meta-loader.js')
      }
    ]
  }
};
