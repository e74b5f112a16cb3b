/* The slide viewer of /view/{id}: OpenSeadragon on the slide's DZI, a scale bar from its MPP,
   a metadata panel and its associated pictures.  Configuration comes from the page's
   <script id="config"> element; every request carries config.query (a viewer token when the
   server signs URLs).  window.slideViewer reports the state (the browser tests read it). */
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("config").textContent);
  const state = (window.slideViewer = {
    ready: false, error: null, info: null, tilesLoaded: 0, tilesFailed: 0, scale: null, viewer: null,
  });
  const withQuery = (url) => url + config.query;

  function fail(message) {
    state.error = String(message);
    const box = document.getElementById("message");
    box.textContent = state.error;
    box.hidden = false;
  }

  function addTerm(list, term, value) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = String(value);
    list.append(dt, dd);
  }

  function showMetadata(info) {
    const list = document.getElementById("metadata");
    addTerm(list, "Format", info.format);
    addTerm(list, "Size", `${info.width} × ${info.height} px`);
    addTerm(list, "Levels", info.level_count);
    if (info.mpp_x) addTerm(list, "Resolution", `${Number(info.mpp_x).toPrecision(4)} µm/px`);
    addTerm(list, "Objective", info.objective_power ? `${info.objective_power}×` : null);
    addTerm(list, "Vendor", info.vendor);
    const properties = info.properties || {};
    for (const key of Object.keys(properties).sort()) addTerm(list, key, properties[key]);
    const pictures = document.getElementById("pictures");
    for (const name of info.associated_images || []) {
      if (name !== "label" && name !== "macro") continue;
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = name;
      img.loading = "lazy";
      img.src = withQuery(config.associated + encodeURIComponent(name));
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      figure.append(img, caption);
      pictures.append(figure);
    }
  }

  // A length of 1, 2 or 5 times a power of ten, micrometres, close to `target`.
  function niceLength(target) {
    const power = Math.pow(10, Math.floor(Math.log10(target)));
    for (const step of [1, 2, 5, 10]) if (step * power >= target) return step * power;
    return 10 * power;
  }

  function updateScale(viewer, mpp) {
    const item = viewer.world.getItemAt(0);
    if (!item || !mpp) return;
    const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true)); // screen px per image px
    const micronsPerScreenPixel = mpp / zoom;
    const micrometres = niceLength(120 * micronsPerScreenPixel);
    const pixels = micrometres / micronsPerScreenPixel;
    const bar = document.getElementById("scalebar");
    bar.querySelector(".bar-line").style.width = `${pixels.toFixed(1)}px`;
    bar.querySelector(".bar-label").textContent =
      micrometres >= 1000 ? `${micrometres / 1000} mm` : `${micrometres} µm`;
    bar.hidden = false;
    state.scale = { micrometres, pixels, zoom };
  }

  // The slide's DZI as a tile source whose tile URLs carry config.query (OpenSeadragon's own
  // DZI reader keeps a query only after a ".dzi" or ".xml" name, which this route has not).
  async function dziTileSource() {
    const response = await fetch(withQuery(config.dzi));
    if (!response.ok) throw new Error(`DZI: HTTP ${response.status}`);
    const doc = new DOMParser().parseFromString(await response.text(), "application/xml");
    const image = doc.documentElement;
    const size = image.getElementsByTagName("Size")[0];
    if (!size) throw new Error("DZI: no Size element");
    const width = Number(size.getAttribute("Width"));
    const height = Number(size.getAttribute("Height"));
    const format = image.getAttribute("Format");
    return {
      width, height,
      tileSize: Number(image.getAttribute("TileSize")),
      tileOverlap: Number(image.getAttribute("Overlap")),
      minLevel: 0,
      maxLevel: Math.ceil(Math.log2(Math.max(width, height))),
      getTileUrl: (level, x, y) => withQuery(`${config.dzi}_files/${level}/${x}_${y}.${format}`),
    };
  }

  function togglePanel() {
    const panel = document.getElementById("panel");
    const button = document.getElementById("toggle-panel");
    const hidden = panel.classList.toggle("hidden");
    button.setAttribute("aria-expanded", String(!hidden));
  }

  async function start() {
    if (typeof OpenSeadragon !== "function") {
      fail("The viewer's OpenSeadragon files are not installed on this server (see README: VIEWER_ASSETS).");
      return;
    }
    const response = await fetch(withQuery(config.info));
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      fail(body.message || `HTTP ${response.status}`);
      return;
    }
    const info = (state.info = await response.json());
    showMetadata(info);
    if (window.matchMedia("(max-width: 700px)").matches) togglePanel();
    const viewer = (state.viewer = OpenSeadragon({
      id: "viewer",
      prefixUrl: config.openseadragon + "images/",
      tileSources: await dziTileSource(),
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: true,
      showFullPageControl: true,
      gestureSettingsTouch: { pinchRotate: true },
      animationTime: 0.6,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      crossOriginPolicy: "Anonymous",
    }));
    viewer.addHandler("open", () => {
      state.ready = true;
      viewer.canvas.focus(); // OpenSeadragon's keys act on its focused canvas
    });
    viewer.addHandler("open-failed", (event) => fail(event.message || "the slide could not be opened"));
    viewer.addHandler("tile-loaded", () => { state.tilesLoaded += 1; });
    viewer.addHandler("tile-load-failed", () => { state.tilesFailed += 1; });
    viewer.addHandler("animation", () => updateScale(viewer, info.mpp_x));
    viewer.addHandler("open", () => updateScale(viewer, info.mpp_x));
    viewer.addHandler("canvas-key", (event) => {
      const key = event.originalEvent.key;
      if (key === "f") {
        event.preventDefaultAction = true;
        viewer.setFullScreen(!viewer.isFullPage());
      } else if (key === "i") {
        event.preventDefaultAction = true;
        togglePanel();
      }
    });
    document.getElementById("toggle-panel").addEventListener("click", togglePanel);
  }

  start().catch((error) => fail(error && error.message ? error.message : error));
})();
