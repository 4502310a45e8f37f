// A webpack loader for Automerge's wasm-bindgen glue: its unused fallback
// `import.meta.url` becomes `self.location.href` (see webpack.config.js).
module.exports = function (source) {
  return source.replace(/\bimport\.meta\.url\b/g, 'self.location.href');
};
