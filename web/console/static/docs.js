// Swagger UI on the edge's own OpenAPI document: an external script, so the page keeps a CSP
// without 'unsafe-inline'. "Try it out" calls the API of this same origin.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // never ask a third-party validator about our document
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
