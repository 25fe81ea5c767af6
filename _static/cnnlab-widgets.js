// CNN Lab: glue between the vendored widget manager (_static/vendor/embed-amd.js) and this site.
// Loaded after require.js and before embed-amd.js (see html_js_files in _config.yml).
(function () {
  // 1. The widget manager's bundles load their icon fonts from an "assets path" derived from
  //    their AMD module's URL, which by default is a folder named after the module under each
  //    page's folder (e.g. book/@jupyter-widgets/), where nothing exists. The fonts were
  //    vendored beside the bundle, in _static/vendor/: map each module the bundle defines
  //    there (they are defined inline, so nothing is fetched from these URLs).
  var src = document.currentScript && document.currentScript.src;
  if (src) {
    var vendor = src.slice(0, src.lastIndexOf("/") + 1) + "vendor/";
    window.__jupyter_widgets_assets_path__ = vendor;
    if (window.requirejs) {
      var paths = {};
      ["base", "base7", "controls", "controls7", "html-manager"].forEach(function (m) {
        paths["@jupyter-widgets/" + m] = vendor + m;
      });
      paths["@jupyter-widgets/html-manager/dist/libembed-amd"] = vendor + "libembed-amd";
      window.requirejs.config({paths: paths});
    }
  }
  // 2. ipywidgets typesets labels with the MathJax 2 API (MathJax.Hub.Queue) whenever
  //    window.MathJax exists; the book loads MathJax 3 (on pages with math), which has no Hub.
  //    Map the call onto MathJax 3 instead of letting it throw.
  function shim() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup || !mj.startup.promise) return;
    mj.Hub = {
      Queue: function (cmd) {
        var el = Array.isArray(cmd) ? cmd[2] : null;
        mj.startup.promise.then(function () {
          return el ? mj.typesetPromise([el]) : mj.typesetPromise();
        }).catch(function (err) { console.warn("MathJax typeset failed:", err); });
      }
    };
  }
  // MathJax is loaded with "defer": it has run by DOMContentLoaded, and widgets render later
  // (on "load").
  document.addEventListener("DOMContentLoaded", shim);
})();
