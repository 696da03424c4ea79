// The archive's one addition to the OHIF Viewer, served after its configuration in
// /viewer/app-config.js: a label on a viewport while it shows a preview.
//
// With progressive loading (pacs/web/viewer.py) Cornerstone3D first draws a slice from the
// first bytes of its HTJ2K frame: a reduced-resolution image, not the original. The label is
// set on every render, so it appears with the render that draws a preview and goes with the
// render that draws the lossless original; the original is what a read ends on.
(function () {
  "use strict";
  var FULL_RESOLUTION = 8; // Cornerstone3D's Enums.ImageQualityStatus.FULL_RESOLUTION
  var TEXT = {
    en: "PREVIEW \u2014 reduced quality, loading the original",
    vi: "\u1EA2NH XEM TR\u01AF\u1EDAC \u2014 ch\u1EA5t l\u01B0\u1EE3ng th\u1EA5p, \u0111ang t\u1EA3i \u1EA3nh g\u1ED1c",
  };

  function language() {
    var chosen = window.localStorage && window.localStorage.getItem("i18nextLng");
    return String(chosen || navigator.language || "en").slice(0, 2).toLowerCase();
  }

  function badgeOf(element) {
    var badge = element.querySelector(":scope > [data-pacs-preview]");
    if (!badge) {
      badge = document.createElement("div");
      badge.setAttribute("data-pacs-preview", "");
      badge.setAttribute("role", "status");
      badge.style.cssText = "position:absolute;top:32px;left:50%;transform:translateX(-50%);" +
        "z-index:20;padding:2px 8px;border-radius:3px;background:rgba(170,20,20,0.9);" +
        "color:#fff;font:600 13px/1.4 sans-serif;pointer-events:none;white-space:nowrap";
      element.appendChild(badge);
    }
    return badge;
  }

  function shownImage(element) {
    var cornerstone = window.cornerstone;
    if (!cornerstone || !cornerstone.getEnabledElement) {
      return null;
    }
    var enabled = cornerstone.getEnabledElement(element);
    var viewport = enabled && enabled.viewport;
    return viewport && viewport.getCornerstoneImage ? viewport.getCornerstoneImage() : null;
  }

  // IMAGE_RENDERED does not bubble: listen in the capture phase, above every viewport.
  document.addEventListener("CORNERSTONE_IMAGE_RENDERED", function (event) {
    var element = event.target;
    var image = shownImage(element);
    var status = image && image.imageQualityStatus;
    var preview = Boolean(image) && status !== undefined && status < FULL_RESOLUTION;
    var badge = badgeOf(element);
    badge.textContent = TEXT[language()] || TEXT.en;
    badge.style.display = preview ? "block" : "none";
  }, true);
})();
