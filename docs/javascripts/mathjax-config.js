// MathJax settings for pymdownx.arithmatex (generic mode): typeset only the spans and divs it
// marks, \( \) inline and \[ \] display; loaded before docs/assets/mathjax/tex-svg.js.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: { fontCache: "global" },
};
